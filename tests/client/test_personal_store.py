"""Sigma_k persists per client, atomically, with the round it belongs to."""

from __future__ import annotations

import os

import pytest
import torch

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
