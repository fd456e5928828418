"""The NF4 base keeps its autograd path after evaluation (bitsandbytes CPU repacking)."""

from __future__ import annotations

import torch

from colora.adapter import attach_adapters
from colora.base_model import load_base_model
from runconfig.schema import AdapterSettings, ModelSettings

NF4_TINY = ModelSettings(source="tiny", quantization="nf4")


def _layer0_grads(*, evaluate_first: bool, inference_only: bool = False):
    model = attach_adapters(
        load_base_model(NF4_TINY, inference_only=inference_only), AdapterSettings(), seed=0
    )
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(3))
    if evaluate_first:  # what a client's evaluate round does before the next train round
        model.eval()
        with torch.no_grad():
            model(input_ids=ids)
    model.train()
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    torch.manual_seed(2)
    model(input_ids=ids, labels=ids).loss.backward()
    return {
        n: p.grad.clone()
        for n, p in model.named_parameters()
        if p.grad is not None and "layers.0." in n and "lora_A" in n
    }


def test_training_after_evaluation_gets_the_same_gradients_as_a_fresh_model():
    fresh = _layer0_grads(evaluate_first=False)
    after_eval = _layer0_grads(evaluate_first=True)
    assert fresh and fresh.keys() == after_eval.keys()
    for name in fresh:
        torch.testing.assert_close(after_eval[name], fresh[name], rtol=0, atol=0, msg=name)
