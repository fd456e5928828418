"""LoRA input dropout with 16-bit masks shared per input (colora.dropout, issue 12)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from colora.adapter import attach_adapters
from colora.base_model import load_base_model
from colora.dropout import (
    InputDropout,
    SharedMasks,
    drop_threshold,
    keep_mask,
    keep_probability,
)
from runconfig.schema import AdapterSettings, ModelSettings


def test_threshold_and_keep_probability_by_hand():
    # p = 0.05: round(0.05 * 65536) = 3277 dropped lanes of 65536; signed threshold -32768 + 3277
    assert drop_threshold(0.05) == -29491
    assert keep_probability(0.05) == 1 - 3277 / 65536
    assert drop_threshold(0.5) == 0 and keep_probability(0.5) == 0.5


def test_mask_drops_p_of_the_values_in_every_lane_and_follows_the_seed():
    torch.manual_seed(0)
    mask = keep_mask(torch.Size([4, 1 << 18]), 0.05, torch.device("cpu"))
    torch.manual_seed(0)
    assert torch.equal(mask, keep_mask(torch.Size([4, 1 << 18]), 0.05, torch.device("cpu")))
    # each of the four 16-bit lanes of a 64-bit draw drops ~5%: 262,144 values per lane, so
    # the binomial std of a lane's share is 0.00043; 0.003 is 7 std
    lanes = (~mask).view(-1, 4).float().mean(0)
    assert torch.all((lanes - 0.05).abs() < 0.003), lanes
    odd = keep_mask(torch.Size([3, 7]), 0.05, torch.device("cpu"))  # not a multiple of 4
    assert odd.shape == (3, 7) and odd.dtype == torch.bool


def test_forward_and_backward_scale_the_kept_values_only():
    masks = SharedMasks()
    drop = InputDropout(0.5, masks)
    x = torch.randn(64, 32, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert torch.equal(y[kept], (x * 2)[kept])  # keep probability 0.5: scale 2
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * 2)
    drop.eval()
    assert drop(x) is x


def test_projections_reading_one_tensor_share_its_mask_and_others_do_not():
    masks = SharedMasks()
    q, k = InputDropout(0.5, masks), InputDropout(0.5, masks)
    x, other = torch.ones(8, 64), torch.ones(8, 64)
    assert torch.equal(q(x), k(x))
    assert not torch.equal(q(other), q(x.clone()))  # a new tensor draws a new mask


def test_refuses_a_probability_outside_the_open_interval():
    for p in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="dropout probability"):
            InputDropout(p, SharedMasks())


def _lora_inputs(model, batch) -> dict[str, torch.Tensor]:
    """The input each LoRA A saw in layer 0 (after dropout), by projection."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if ".layers.0." in name and name.endswith("lora_A.shared"):
            proj = name.split(".")[-3]
            hooks.append(
                module.register_forward_pre_hook(
                    lambda m, args, proj=proj: seen.__setitem__(proj, args[0].detach().clone())
                )
            )
    model(input_ids=batch)
    for hook in hooks:
        hook.remove()
    return seen


def test_the_adapted_model_shares_masks_within_attention_and_mlp_inputs():
    settings = AdapterSettings(rank=4, alpha=8, dropout=0.5)
    model = attach_adapters(load_base_model(ModelSettings(source="tiny")), settings, seed=0)
    drops = [m for m in model.modules() if isinstance(m, InputDropout)]
    assert drops and not any(isinstance(m, nn.Dropout) for m in model.modules())
    model.train()
    torch.manual_seed(1)
    seen = _lora_inputs(model, torch.randint(0, 100, (2, 16)))
    zeros = {proj: x == 0 for proj, x in seen.items()}
    assert torch.equal(zeros["q_proj"], zeros["k_proj"])
    assert torch.equal(zeros["q_proj"], zeros["v_proj"])
    assert torch.equal(zeros["gate_proj"], zeros["up_proj"])
    assert not torch.equal(zeros["q_proj"], zeros["gate_proj"])
    assert 0.3 < zeros["q_proj"].float().mean() < 0.7  # p = 0.5 on 2 x 16 x hidden values
    model.eval()
    seen = _lora_inputs(model, torch.randint(0, 100, (2, 16)))
    assert not any(bool((x == 0).any()) for x in seen.values())


def test_under_autocast_the_copy_is_in_the_product_dtype_and_the_gradient_in_the_input_dtype():
    x = torch.randn(16, 32, requires_grad=True)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = InputDropout(0.25, SharedMasks())(x)
    assert y.dtype == torch.bfloat16
    torch.manual_seed(3)
    mask = keep_mask(x.shape, 0.25, x.device)
    scale = 1 / keep_probability(0.25)
    # the values autocast would give lora_A: the float32 dropout output cast to bf16
    assert torch.equal(y, (x.detach() * mask * scale).to(torch.bfloat16))
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32
    assert torch.equal(x.grad, mask.float() * scale)
