"""Sigma_k persists per client, atomically, with the round it belongs to."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from client.personal_store import load_personal, save_personal


def test_round_trip_keeps_values_and_round(tmp_path):
    path = tmp_path / "client-3" / "personal.safetensors"
    state = {"layer0": torch.eye(2) * 2, "layer1": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}
    save_personal(path, state, server_round=4)
    loaded, server_round = load_personal(path)
    assert server_round == 4
    assert set(loaded) == {"layer0", "layer1"}
    assert torch.equal(loaded["layer1"], state["layer1"])


def test_missing_state_is_none(tmp_path):
    assert load_personal(tmp_path / "nope.safetensors") is None


def test_failed_write_keeps_previous_state(tmp_path, monkeypatch):
    path = tmp_path / "personal.safetensors"
    save_personal(path, {"w": torch.ones(2, 2)}, server_round=1)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_personal(path, {"w": torch.zeros(2, 2)}, server_round=2)
    loaded, server_round = load_personal(path)
    assert server_round == 1 and torch.equal(loaded["w"], torch.ones(2, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["personal.safetensors"]  # no temp left


def test_rerun_round_reads_the_state_from_before_it(tmp_path):
    path = tmp_path / "personal.safetensors"
    save_personal(path, {"w": torch.full((1,), 1.0)}, server_round=1)
    save_personal(path, {"w": torch.full((1,), 2.0)}, server_round=2)  # aborted round 2
    state, server_round = load_personal(path, before_round=2)
    assert server_round == 1 and state["w"].item() == 1.0
    save_personal(path, {"w": torch.full((1,), 2.5)}, server_round=2)  # round 2 re-run
    state, server_round = load_personal(path, before_round=3)
    assert server_round == 2 and state["w"].item() == 2.5
    assert load_personal(path, before_round=2)[0]["w"].item() == 1.0
    assert load_personal(path, before_round=1) is None


def _damaged(path, kind: str) -> None:
    """Overwrite ``path`` with a file this module cannot have written."""
    good = path.read_bytes()
    if kind == "garbage":
        path.write_bytes(b"\x00garbage" * 9)
    elif kind == "truncated":
        path.write_bytes(good[:-3])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "nan":
        save_file({"w": torch.full((2, 2), float("nan"))}, path, metadata={"server-round": "2"})
    elif kind == "integer tensor":
        save_file({"w": torch.ones(2, 2, dtype=torch.int64)}, path, metadata={"server-round": "2"})
    elif kind == "no round":
        save_file({"w": torch.ones(2, 2)}, path)
    else:  # a round that is not a round number
        save_file({"w": torch.ones(2, 2)}, path, metadata={"server-round": kind})


@pytest.mark.parametrize(
    "kind",
    ["garbage", "truncated", "empty", "nan", "integer tensor", "no round",
     "1e999", '"2"', "true", "-1", "[2]", "{"],
)  # fmt: skip
def test_a_damaged_state_is_set_aside_and_the_earlier_one_read(tmp_path, kind, caplog):
    path = tmp_path / "personal.safetensors"
    save_personal(path, {"w": torch.ones(2, 2)}, server_round=1)
    save_personal(path, {"w": torch.full((2, 2), 2.0)}, server_round=2)
    _damaged(path, kind)
    damaged = path.read_bytes()
    state, server_round = load_personal(path)  # falls back to round 1's state
    assert server_round == 1 and torch.equal(state["w"], torch.ones(2, 2))
    assert (tmp_path / "personal.safetensors.corrupt").read_bytes() == damaged  # kept as it was
    assert "is damaged" in caplog.text and "personal.safetensors.corrupt" in caplog.text
    # The next round saves over the gap, keeping round 1 as the state before it.
    save_personal(path, {"w": torch.full((2, 2), 3.0)}, server_round=2)
    assert load_personal(path)[1] == 2 and load_personal(path, before_round=2)[1] == 1


def test_damaged_states_never_overwrite_each_other(tmp_path):
    path = tmp_path / "personal.safetensors"
    for number in range(3):
        path.write_bytes(b"damaged %d" % number)
        assert load_personal(path) is None
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"personal.safetensors.corrupt{s}" for s in ("", ".1", ".2")]
    assert (tmp_path / "personal.safetensors.corrupt.2").read_bytes() == b"damaged 2"
