"""The client's side of the strategies: the round plan, HetLoRA ranks, FFA's frozen A, and the
FLoRA/FedEx-LoRA frozen merged term (on disk, and in the forward pass)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from client.batching import Batch
from client.rounds import MergePlan, RoundPlan, _frozen_term, _with_rank
from client.train import Phase, train
from colora.adapter import (
    attach_adapters,
    load_frozen_delta,
    load_shared_state,
    personal_parameters,
    shared_parameters,
    shared_state,
)
from colora.base_model import load_base_model
from runconfig.schema import AdapterSettings

SETTINGS = AdapterSettings(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "down_proj"))
INPUT = torch.tensor([[1, 5, 9, 200, 31, 7], [4, 4, 8, 15, 16, 23]])


@pytest.fixture()
def model(tiny_model_settings):
    return attach_adapters(load_base_model(tiny_model_settings), SETTINGS, seed=0)


def test_plan_defaults_to_colora_and_parses_every_key():
    plan = RoundPlan.from_config({"server-round": 3}, {})
    assert plan == RoundPlan(server_round=3)
    assert plan.train_factors == ("A", "B") and plan.merge is None and plan.rank_for(5) is None
    plan = RoundPlan.from_config(
        {
            "server-round": 1,
            "train-factors": "B",
            "private-factors": "A,B",
            "client-ranks": "8,2",
            "steps-scale": 3,
            "merge-mode": "add",
            "merge-round": 4,
            "proximal-mu": 0.1,
        },
        {},
    )
    assert plan.train_factors == ("B",) and plan.private_factors == ("A", "B")
    assert (plan.rank_for(0), plan.rank_for(3), plan.steps_scale) == (8, 2, 3)
    assert plan.merge == MergePlan("add", 4, {}) and plan.proximal_mu == 0.1


def test_frozen_term_replace_add_keep_and_refuse_a_gap(tmp_path):
    data = SimpleNamespace(ident=SimpleNamespace(state_dir=tmp_path))
    layer, dense = "m.q_proj", torch.ones(3, 2)
    b, a = torch.arange(6.0).reshape(3, 2), torch.eye(2)
    assert _frozen_term(data, MergePlan("replace", 0)) == {}
    term = _frozen_term(data, MergePlan("replace", 1, {f"{layer}.merge_W": dense}))
    assert torch.equal(term[layer], dense)
    term = _frozen_term(data, MergePlan("add", 2, {f"{layer}.merge_B": b, f"{layer}.merge_A": a}))
    assert torch.equal(term[layer], dense + b @ a)
    again = _frozen_term(data, MergePlan("add", 2, {f"{layer}.merge_B": b, f"{layer}.merge_A": a}))
    assert torch.equal(again[layer], term[layer])  # already applied: not added twice
    assert torch.equal(_frozen_term(data, MergePlan("keep", 2))[layer], term[layer])
    with pytest.raises(ValueError, match="holds round 2"):
        _frozen_term(data, MergePlan("add", 4, {}))


def test_frozen_delta_equals_merging_into_the_base_weight(model):
    layers = [
        name
        for name, module in model.named_modules()
        if name.endswith("q_proj") and hasattr(module, "base_layer")
    ]
    delta = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) * 0.1
    load_frozen_delta(model, {layers[0]: delta})
    with torch.no_grad():
        hooked = model(input_ids=INPUT).logits
        load_frozen_delta(model, None)
        base = model.get_submodule(layers[0]).base_layer
        base.weight += SETTINGS.scale * delta
        merged = model(input_ids=INPUT).logits
    torch.testing.assert_close(hooked, merged, atol=1e-5, rtol=1e-5)


def _batches():
    labels = INPUT.clone()
    labels[:, :2] = -100
    batch = Batch(INPUT, torch.ones_like(INPUT), labels, ("generation", "translation"))
    return iter(lambda: batch, None)


def test_padded_ranks_stay_zero_and_ffa_never_moves_a(model):
    state = shared_state(model)
    load_shared_state(model, {k: v + 0.1 if "lora_B" in k else v for k, v in state.items()})
    load_shared_state(model, _with_rank(shared_state(model), 2, pad=True))
    phases = [
        Phase("sigma", personal_parameters(model), 2, 1e-2),
        Phase("shared", shared_parameters(model), 3, 1e-2),
    ]
    train(model, _batches(), phases)
    trained = shared_state(model)
    for key, value in trained.items():
        padded = value[2:] if "lora_A" in key else value[:, 2:]
        assert torch.count_nonzero(padded) == 0, key
    assert all(
        v.shape[0 if "lora_A" in k else 1] == 2
        for k, v in _with_rank(trained, 2, pad=False).items()
    )

    before = {k: v.clone() for k, v in shared_state(model).items()}  # live views otherwise
    train(model, _batches(), [Phase("shared", shared_parameters(model, ("B",)), 2, 1e-2)])
    after = shared_state(model)
    assert all(torch.equal(after[k], before[k]) for k in before if "lora_A" in k)
    assert not all(torch.equal(after[k], before[k]) for k in before if "lora_B" in k)
