"""FedDPA's dual adapter on the tiny model: what travels, what stays, and the plain export.

FedDPA (Yang et al. 2024, arXiv 2409.17201): a shared LoRA (A, B) of rank r and a personal
LoRA (C_k, D_k) of rank r_p on the same modules, outputs added. The export concatenates both
into one PEFT LoRA of rank r + r_p that plain PEFT loads with the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from colora.adapter import (
    attach_adapters,
    load_personal_state,
    personal_parameters,
    personal_state,
    plain_lora_state,
    shared_parameters,
    shared_state,
)
from colora.base_model import load_base_model, resolve_model_path
from colora.export import save_adapter
from runconfig.fields import ConfigError
from runconfig.schema import AdapterSettings, parse_run_config

DUAL = AdapterSettings(
    rank=4,
    alpha=8,
    dropout=0.0,
    target_modules=("q_proj", "v_proj", "down_proj"),
    personal="dual",
    personal_rank=2,
)
INPUT = torch.tensor([[1, 5, 9, 200, 31, 7], [4, 4, 8, 15, 16, 23]])


@pytest.fixture()
def model(tiny_model_settings):
    return attach_adapters(load_base_model(tiny_model_settings), DUAL, seed=0)


def _logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=INPUT).logits


def _randomize(params, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def test_dual_starts_as_the_base_model(model):
    with model.disable_adapter():
        base = _logits(model)
    assert torch.allclose(_logits(model), base)  # B = 0 and D = 0


def test_only_the_shared_lora_travels(model):
    state = shared_state(model)
    assert len(state) == 2 * 3 * 2  # 2 layers x 3 modules x (A, B)
    assert all(v.shape[0] == 4 or v.shape[1] == 4 for v in state.values())  # rank r, not r + r_p
    personal = personal_state(model)
    assert len(personal) == 2 * 3 * 2 and all(k.endswith((".C", ".D")) for k in personal)
    assert not {id(p) for p in personal_parameters(model)} & {
        id(p) for p in shared_parameters(model)
    }


def test_personal_lora_changes_outputs_and_resets(model):
    before = _logits(model)
    _randomize(personal_parameters(model), seed=2)
    assert not torch.allclose(_logits(model), before, atol=1e-4)
    load_personal_state(model, None)
    assert torch.allclose(_logits(model), before)
    saved = {k: v.clone() for k, v in personal_state(model).items()}
    _randomize(personal_parameters(model), seed=3)
    load_personal_state(model, saved)
    assert all(torch.equal(saved[k], v) for k, v in personal_state(model).items())


def test_dual_export_loads_in_plain_peft_with_same_outputs(model, tiny_model_settings, tmp_path):
    _randomize(shared_parameters(model), seed=1)
    _randomize(personal_parameters(model), seed=2)
    expected = _logits(model)
    state, settings = plain_lora_state(model, DUAL)
    assert settings.rank == 6 and settings.scale == 1.0
    base_path = resolve_model_path(tiny_model_settings)
    out = save_adapter(state, settings, base_path, Path(tmp_path) / "adapter")
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), out)
    with torch.no_grad():
        got = plain(input_ids=INPUT).logits
    assert torch.allclose(got, expected, atol=1e-5)
    load_personal_state(model, None)  # the personal path must matter, or this proves nothing
    assert not torch.allclose(_logits(model), expected, atol=1e-3)


def test_personal_rank_is_checked_against_the_mode():
    with pytest.raises(ConfigError, match=r"adapter\.personal-rank"):
        AdapterSettings(personal="dual", personal_rank=0)
    with pytest.raises(ConfigError, match=r"adapter\.personal-rank"):
        AdapterSettings(personal="sigma", personal_rank=4)


def test_dual_without_personal_steps_is_refused(pyproject):
    flat = {**pyproject, "adapter.personal": "dual", "adapter.personal-rank": 2}
    assert parse_run_config(flat).adapter.personal_rank == 2
    with pytest.raises(ConfigError, match=r"train\.sigma-steps"):
        parse_run_config({**flat, "train.sigma-steps": 0})
    joint = {**flat, "train.sigma-steps": 0, "train.schedule": "joint"}
    assert parse_run_config(joint).train.personal_steps() == 0


@pytest.fixture()
def pyproject():
    from tests.conftest import pyproject_defaults

    return pyproject_defaults()
