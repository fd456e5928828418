"""Compressed rounds end to end in Flower's simulation engine (tiny model, 3 clients).

int8 updates up and bfloat16 adapters down: the run trains as the float32 run does, and the
bytes that ``metrics.jsonl`` reports shrink by the codecs' ratios.
"""

from __future__ import annotations

import pytest

from server.run_dir import read_metrics
from simulations.engine import simulate
from tests.e2e import ONE_WORKER, TINY_RUN

pytestmark = pytest.mark.slow


def _run(tmp_path, data_root, name, **comm):
    overrides = {**TINY_RUN, "output-dir": str(tmp_path), "run-name": name}
    overrides |= {"data.root": str(data_root), **comm}
    simulate(overrides, num_supernodes=3, ray_init_args=ONE_WORKER)
    return read_metrics(tmp_path / name)


def test_int8_up_and_bf16_down_train_like_fp32_on_a_quarter_of_the_bytes(tmp_path, data_root):
    plain = _run(tmp_path, data_root, "fp32")
    packed = _run(tmp_path, data_root, "packed", **{"comm.uplink": "int8", "comm.downlink": "bf16"})
    assert [r["round"] for r in packed] == [1, 2] and not any(r.get("failed") for r in packed)
    assert all(not r["rejected"] for r in packed)
    for fp32, lossy in zip(plain, packed, strict=True):
        # int8 + one float32 scale per 128 values is 0.26 of float32's tensor bytes; the tiny
        # model's tensors are so small that .npy headers (and a scale array each) add a lot.
        assert 0.25 < lossy["bytes_up"] / fp32["bytes_up"] < 0.40
        # bfloat16 down (the train and evaluate messages): half, plus the headers.
        assert 0.5 < lossy["bytes_down"] / fp32["bytes_down"] < 0.6
        for task, loss in fp32["eval_loss_by_task"].items():
            assert lossy["eval_loss_by_task"][task] == pytest.approx(loss, rel=0.01)
