"""CoLoRA layer maths on the tiny model: identity start, Sigma folding, what travels."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from colora.adapter import (
    attach_adapters,
    folded_state,
    load_personal_state,
    load_shared_state,
    personal_parameters,
    personal_state,
    shared_parameters,
    shared_state,
)
from colora.base_model import load_base_model, resolve_model_path
from colora.export import save_adapter
from runconfig.schema import AdapterSettings

SETTINGS = AdapterSettings(
    rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj", "down_proj")
)
INPUT = torch.tensor([[1, 5, 9, 200, 31, 7], [4, 4, 8, 15, 16, 23]])


@pytest.fixture()
def model(tiny_model_settings):
    return attach_adapters(load_base_model(tiny_model_settings), SETTINGS, seed=0)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT).logits


def _randomize(model, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in shared_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for p in personal_parameters(model):
            p.copy_(torch.eye(p.shape[0]) + 0.5 * torch.randn(p.shape, generator=gen))


def test_b_zero_output_equals_base_output(model):
    # B starts at zero, so even a non-identity Sigma_k leaves the base output unchanged.
    with torch.no_grad():
        for p in personal_parameters(model):
            p.copy_(torch.full(p.shape, 3.0))
    with model.disable_adapter():
        base = _logits(model)
    assert torch.equal(_logits(model), base)


def test_sigma_changes_the_output_once_b_is_nonzero(model):
    _randomize(model)
    before = _logits(model)
    with torch.no_grad():
        personal_parameters(model)[0].mul_(2.0)
    assert not torch.allclose(_logits(model), before)


def test_folding_sigma_into_b_reproduces_outputs(model, tiny_model_settings):
    _randomize(model)
    expected = _logits(model)
    with tempfile.TemporaryDirectory() as tmp:
        out = save_adapter(
            folded_state(model),
            SETTINGS,
            resolve_model_path(tiny_model_settings),
            Path(tmp) / "adapter",
        )
        plain = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(resolve_model_path(tiny_model_settings)), out
        )
        with torch.no_grad():
            got = plain(input_ids=INPUT).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_only_shared_factors_are_selected_for_sending(model):
    state = shared_state(model)
    # 2 layers x 3 target modules x (A, B); no Sigma and no base weight travels.
    assert len(state) == 2 * 3 * 2
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in state)
    assert len(personal_state(model)) == 2 * 3
    sigma_ids = {id(p) for p in personal_parameters(model)}
    assert not sigma_ids & {id(p) for p in shared_parameters(model)}


def test_shared_state_round_trip_and_shape_errors(model, tiny_model_settings):
    _randomize(model)
    state = shared_state(model)
    other = attach_adapters(load_base_model(tiny_model_settings), SETTINGS, seed=0)
    load_shared_state(other, state)
    assert all(torch.equal(state[k], v) for k, v in shared_state(other).items())
    bad = dict(state)
    key = next(iter(bad))
    bad[key] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="shape"):
        load_shared_state(other, bad)
    with pytest.raises(ValueError, match="missing"):
        load_shared_state(other, {k: v for k, v in state.items() if k != key})


def test_personal_state_resets_to_identity(model):
    _randomize(model)
    load_personal_state(model, None)
    for p in personal_parameters(model):
        assert torch.equal(p, torch.eye(SETTINGS.rank))
