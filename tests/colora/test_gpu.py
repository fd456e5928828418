"""On CUDA: an NF4 base computes in bf16 and trains its adapters (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from client.batching import Batch
from client.train import Phase, per_example_loss, train
from colora import precision
from colora.adapter import attach_adapters, shared_parameters
from colora.base_model import dense_4bit_weights, load_base_model
from runconfig.schema import AdapterSettings, ModelSettings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _batch() -> Batch:
    ids = torch.randint(5, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :16] = -100
    return Batch(ids, torch.ones_like(ids), labels, ("generation", "generation"))


def test_nf4_on_cuda_computes_in_bf16_and_trains():
    import bitsandbytes as bnb

    base = load_base_model(ModelSettings(source="tiny", quantization="nf4"))  # compute "auto"
    assert precision.of(base) == torch.bfloat16
    layers = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.device.type == "cuda" for m in layers)
    assert all(m.compute_dtype == torch.bfloat16 for m in layers)
    model = attach_adapters(base, AdapterSettings(), seed=0)
    shared = shared_parameters(model)
    before = [p.detach().clone() for p in shared]
    result = train(model, iter(lambda: _batch(), None), [Phase("shared", shared, 3, 1e-2)])
    assert all(torch.isfinite(torch.tensor(result.step_losses)))
    moved = [not torch.equal(p.detach(), b) for p, b in zip(shared, before, strict=True)]
    assert all(moved)  # every factor, layer 0 included, got a gradient


def test_dense_weights_match_bitsandbytes_on_cuda():
    model = attach_adapters(
        load_base_model(ModelSettings(source="tiny", quantization="nf4"), compute_dtype="fp32"),
        AdapterSettings(dropout=0.0),
        seed=0,
    )
    with torch.no_grad():
        expected = per_example_loss(model, _batch())
        with dense_4bit_weights(model):
            dense = per_example_loss(model, _batch())
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-5)
