"""Client-side local DP: clipping, the Gaussian mechanism's noise, and the (ε, δ) ledger."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.privacy import (
    LEDGER_FILE,
    LedgerError,
    gaussian_sigma,
    local_dp_mod,
    privatise,
    record_spend,
)
from colora.wire import to_numpy, to_record
from runconfig.schema import PrivacySettings, parse_run_config
from tests.conftest import pyproject_defaults

pytestmark = pytest.mark.usefixtures("server_task_identity")
KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.shared.weight"


def test_sigma_is_the_gaussian_mechanism_for_sensitivity_2c():
    privacy = PrivacySettings(dp_mode="local", dp_clip_norm=0.5, dp_epsilon=0.5, dp_delta=1e-5)
    # Δ = 2C = 1; σ = Δ · sqrt(2 ln(1.25 / δ)) / ε = sqrt(2 ln 125000) / 0.5
    assert gaussian_sigma(privacy) == pytest.approx(math.sqrt(2 * math.log(125_000)) / 0.5)


def test_update_is_clipped_and_noised_with_that_sigma():
    privacy = PrivacySettings(dp_mode="local", dp_clip_norm=1.0, dp_epsilon=1.0, dp_delta=0.5)
    sent = {KEY: np.zeros((4, 50_000), np.float32)}
    update = np.zeros((4, 50_000), np.float32)
    update[0, 0] = 30.0  # norm 30, clipped to 1
    sigma = gaussian_sigma(privacy)
    for seed in range(3):  # seeded here, so the statistical bounds cannot fail by chance
        noisy, norm = privatise(sent, {KEY: update}, privacy, np.random.default_rng(seed))
        assert norm == pytest.approx(30.0)
        noise = noisy[KEY] - np.where(update > 0, 1.0, 0.0)
        assert noise.std() == pytest.approx(sigma, rel=3 / math.sqrt(2 * noise.size))
        assert abs(noise.mean()) < 3 * sigma / math.sqrt(noise.size)


def test_clients_draw_fresh_noise_every_time():
    privacy = PrivacySettings(dp_mode="local", dp_clip_norm=1.0, dp_epsilon=1.0, dp_delta=0.5)
    sent, reply = {KEY: np.zeros((2, 8), np.float32)}, {KEY: np.ones((2, 8), np.float32)}
    first, _ = privatise(sent, reply, privacy)
    # 16 continuous draws from OS entropy: equal only if the generator were replayed.
    assert not np.array_equal(privatise(sent, reply, privacy)[0][KEY], first[KEY])


def test_ledger_composes_rounds_and_counts_a_rerun_round_once(tmp_path):
    privacy = PrivacySettings(dp_mode="local", dp_clip_norm=1.0, dp_epsilon=0.25, dp_delta=1e-6)
    assert record_spend(tmp_path, 1, privacy) == pytest.approx((0.25, 1e-6))
    assert record_spend(tmp_path, 2, privacy) == pytest.approx((0.5, 2e-6))
    assert record_spend(tmp_path, 2, privacy) == pytest.approx((0.5, 2e-6))  # resumed round
    assert (tmp_path / LEDGER_FILE).is_file()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",  # not UTF-8
        b"[" * 100_000,  # nested past the parser's stack
        b"[]",
        b'{"1": [0.25]}',
        b'{"1": [0.25, NaN]}',
        b'{"1": [-0.25, 1e-6]}',
        b'{"1": [true, 1e-6]}',
        b'{"1": ["0.25", 1e-6]}',
        b'{"one": [0.25, 1e-6]}',
    ],
)
def test_a_damaged_ledger_fails_closed_and_is_left_as_it_is(tmp_path, content):
    # Read as empty, it would restart the count and understate the privacy spent.
    privacy = PrivacySettings(dp_mode="local", dp_clip_norm=1.0, dp_epsilon=0.25, dp_delta=1e-6)
    ledger = tmp_path / LEDGER_FILE
    ledger.write_bytes(content)
    with pytest.raises(LedgerError, match=r"privacy ledger .* is damaged .*no update is sent"):
        record_spend(tmp_path, 2, privacy)
    assert ledger.read_bytes() == content


def _round(tmp_path, **privacy):
    flat = pyproject_defaults() | {"output-dir": str(tmp_path), "run-name": "dp"}
    flat |= {f"privacy.{k}": v for k, v in privacy.items()}
    ctxt = Context(
        run_id=1,
        node_id=5,
        node_config={"partition-id": 0, "num-partitions": 3},
        state=RecordDict(),
        run_config=flat,
    )
    sent = {KEY: np.zeros((8, 16), np.float32)}
    msg = Message(
        RecordDict({"arrays": to_record(sent), "config": ConfigRecord({"server-round": 3})}),
        dst_node_id=5,
        message_type="train",
    )

    def train(m, c):
        arrays = {KEY: np.full((8, 16), 0.5, np.float32)}  # norm 0.5 * sqrt(128) = 5.66
        metrics = MetricRecord({"num-examples": 4, "client-id": 0})
        return Message(RecordDict({"arrays": to_record(arrays), "metrics": metrics}), reply_to=m)

    return local_dp_mod(msg, ctxt, train), parse_run_config(flat)


def test_mod_privatises_the_reply_and_reports_the_spend(tmp_path):
    reply, cfg = _round(tmp_path, **{"dp-mode": "local", "dp-clip-norm": 1.0, "dp-epsilon": 0.5})
    metrics = reply.content["metrics"]
    assert metrics["dp-epsilon"] == 0.5 and metrics["dp-epsilon-spent"] == 0.5
    # The raw update's norm is a function of private data outside the mechanism: never sent.
    assert not any("norm" in k or "clipped" in k for k in metrics)
    assert not np.allclose(to_numpy(reply.content["arrays"])[KEY], 0.5)
    ledger = cfg.run_dir() / "clients" / "client-0" / LEDGER_FILE
    assert ledger.is_file(), "the ledger lives in the client's own state directory"


def test_mod_is_a_no_op_when_dp_is_off(tmp_path):
    reply, _ = _round(tmp_path)
    assert "dp-epsilon" not in reply.content["metrics"]
    np.testing.assert_array_equal(to_numpy(reply.content["arrays"])[KEY], 0.5)


def test_config_rejects_an_epsilon_the_classic_bound_does_not_cover():
    from runconfig.fields import ConfigError

    with pytest.raises(ConfigError, match=r"privacy\.dp-epsilon"):
        parse_run_config(pyproject_defaults() | {"privacy.dp-epsilon": 4.0})
