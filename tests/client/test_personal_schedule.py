"""The personal phase's schedule: Sigma_k moves only with real steps (issue 11, part 2).

With one Adam step at 1e-3 per round each entry of Sigma_k = I moves by about 1e-3, so CoLoRA
is FedAvg in all but name; a schedule that ties the Sigma steps to the shared steps, at a
learning rate of 1e-2, moves it by orders of magnitude more and changes the model's outputs.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from client.batching import collate, encode_all
from client.train import Phase, train
from codetasks.loading import load_task
from colora.adapter import attach_adapters, personal_parameters, shared_parameters
from colora.base_model import load_base_model
from runconfig.fields import ConfigError
from runconfig.schema import AdapterSettings, ModelSettings, TrainSettings

SETTINGS = AdapterSettings(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))


@pytest.fixture(scope="module")
def batches(tiny_tokenizer, data_root):
    examples = load_task("translation", "train", data_root=data_root, limit=16)
    items = sorted(encode_all(tiny_tokenizer, examples, 256), key=lambda e: len(e.input_ids))
    pad = tiny_tokenizer.pad_token_id
    return [collate(items[i : i + 2], pad) for i in (0, 2)]  # the 4 shortest: a fast test


def _trained_model():
    """The tiny model as a client receives it after some rounds: B no longer zero."""
    model = attach_adapters(load_base_model(ModelSettings(source="tiny")), SETTINGS, seed=0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in shared_parameters(model, ("B",)):
            param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return model


def _sigma_drift(batches, steps: int, lr: float) -> tuple[float, float]:
    """(max |Sigma_k - I| over layers, max |logit change|) after a Sigma phase."""
    model = _trained_model()
    probe = batches[0]
    with torch.no_grad():
        before = model(input_ids=probe.input_ids, attention_mask=probe.attention_mask).logits
    train(model, itertools.cycle(batches), [Phase("sigma", personal_parameters(model), steps, lr)])
    model.eval()
    with torch.no_grad():
        after = model(input_ids=probe.input_ids, attention_mask=probe.attention_mask).logits
    drift = max((p - torch.eye(p.shape[0])).abs().max().item() for p in personal_parameters(model))
    return drift, (after - before).abs().max().item()


@pytest.fixture(scope="module")
def one_small_step(batches):
    return _sigma_drift(batches, steps=1, lr=1e-3)


def test_one_step_at_1e3_leaves_sigma_at_the_identity(one_small_step):
    assert one_small_step[0] <= 1.01e-3  # Adam's first step is at most lr per entry


def test_a_real_schedule_moves_sigma_and_the_outputs(batches, one_small_step):
    small, small_logits = one_small_step
    drift, logits = _sigma_drift(batches, steps=4, lr=1e-2)
    assert drift > 0.02  # 20x the one-step drift bound (cosine decay shortens later steps)
    assert drift > 15 * small
    assert logits > 5 * small_logits > 0


@pytest.mark.parametrize(
    ("sigma_steps", "shared_steps", "scale", "expected"),
    [(2, 4, 1, 2), (2, 4, 3, 6), (0, 4, 1, 0), (0.5, 4, 1, 2), (0.3, 4, 1, 2), (0.5, 3, 2, 3)],
)
def test_personal_steps_count_or_fraction(sigma_steps, shared_steps, scale, expected):
    settings = TrainSettings(sigma_steps=sigma_steps, shared_steps=shared_steps)
    assert settings.personal_steps(scale) == expected


@pytest.mark.parametrize("bad", [2.5, -1, 1.5])
def test_sigma_steps_neither_count_nor_fraction_is_refused(bad):
    with pytest.raises(ConfigError, match=r"train\.sigma-steps"):
        TrainSettings(sigma_steps=bad)


@pytest.mark.parametrize(
    ("personal", "override", "expected"),
    [
        # dual: the shared rate unless set; never Sigma_k's 1e-2 (issue 11: it diverged)
        ("dual", {}, {"shared": 6e-4, "personal": 6e-4}),
        ("dual", {"train.personal-learning-rate": 1e-4}, {"shared": 6e-4, "personal": 1e-4}),
        ("sigma", {"train.personal-learning-rate": 1e-4}, {"sigma": 1e-2, "shared": 6e-4}),
    ],
)
def test_each_personal_phase_trains_at_its_own_rate(personal, override, expected):
    from client.rounds import RoundPlan, _phases
    from client.runtime import ModelRuntime
    from runconfig import parse_run_config
    from tests.conftest import pyproject_defaults

    cfg = parse_run_config(
        {
            **pyproject_defaults(),
            "adapter.personal": personal,
            "adapter.personal-rank": 2 if personal == "dual" else 0,
            "train.learning-rate": 6e-4,
            "train.sigma-learning-rate": 1e-2,
            **override,
        }
    )
    adapter = AdapterSettings(
        rank=4, alpha=8, dropout=0.0, personal=personal, personal_rank=cfg.adapter.personal_rank
    )
    model = attach_adapters(load_base_model(ModelSettings(source="tiny")), adapter, seed=0)
    phases = _phases(cfg, ModelRuntime(model, None, ""), RoundPlan(server_round=1))
    assert {p.name: p.learning_rate for p in phases} == expected
