"""LoRA dropout at a quarter of the random numbers, one mask per input.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) as PEFT implements it drops the input
of each adapted projection: ``lora_B(lora_A(dropout(x)))``. On the CPU, PEFT's ``nn.Dropout``
draws one Mersenne-Twister number per value (``aten::bernoulli_``); a profile of the default
client step put those draws at 14% of its CPU time (issue 12). :class:`InputDropout` keeps the
rule and changes how the mask is made:

- **16 random bits per value.** One 64-bit draw gives four values; a value is kept when its 16
  bits are at or above round(p * 2^16), so the drop probability is that over 2^16 (0.050003 for
  p = 0.05) and the kept values are scaled by the inverse of the keep probability, as dropout
  does (a p below 2^-17 rounds to no dropout). The mask is drawn from torch's generator, so a
  seed fixes it.
- **One mask per input tensor.** Projections that read the same tensor (q, k and v read the
  attention's normalised input; gate and up the MLP's) share a mask and its dropped-out copy,
  as they do where a model fuses them into one projection (Phi-3's ``qkv_proj``, GPT-NeoX's
  ``query_key_value``, which PEFT then drops once). A layer's 7 masks become 4, and 4,992
  random values per token become 3,264 on SmolLM2 (576 wide, MLP 1,536).
- **Less kept for the backward pass.** ``nn.Dropout`` on the CPU keeps a float32 noise tensor
  (4 bytes a value) per projection; this keeps a one-byte mask per input, and one copy of the
  dropped-out input, in the dtype the product casts it to.

Activation checkpointing recomputes a layer from the same generator state (torch restores it),
and the recomputed input is a new tensor, so the mask drawn again is the same one.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

_BITS = 16  # random bits per value: four values per 64-bit draw


class _ScaledMask(torch.autograd.Function):
    """(x * mask * scale) in ``dtype``, keeping only the one-byte mask for the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float, dtype: torch.dtype):
        ctx.save_for_backward(mask)
        ctx.scale, ctx.input_dtype = scale, x.dtype
        return (x * mask * scale).to(dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad.to(ctx.input_dtype) * mask * ctx.scale, None, None, None


def _product_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the next matrix product casts ``x`` to: autocast's, where it is on."""
    kind = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A boolean mask of ``shape``, each value False with probability round(p·2¹⁶)/2¹⁶."""
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # every bit of every word: four uniform 16-bit lanes
    lanes = words.view(torch.int16)[:count]
    return (lanes >= drop_threshold(p)).view(shape)


def drop_threshold(p: float) -> int:
    """The signed 16-bit value below which a lane is dropped."""
    return round(p * 2**_BITS) - 2 ** (_BITS - 1)


def keep_probability(p: float) -> float:
    return 1.0 - round(p * 2**_BITS) / 2**_BITS


class SharedMasks:
    """The last input seen and its dropped-out copy: projections called on the same tensor
    reuse both. The copy is already in the dtype autocast would cast it to, so lora_A's
    product saves one copy of the input for its backward pass where each projection would
    have cast and saved its own (q, k, v: one bf16 copy instead of three; the values are the
    ones autocast computes). A weak reference to the input, so the entry never keeps an
    activation alive, and a tensor freed and another allocated in its place never match."""

    def __init__(self) -> None:
        self._input: weakref.ref | None = None
        self._output: torch.Tensor | None = None

    def output_for(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if self._input is not None and self._input() is x and self._output is not None:
            return self._output
        mask = keep_mask(x.shape, p, x.device)
        out = _ScaledMask.apply(x, mask, 1.0 / keep_probability(p), _product_dtype(x))
        self._input, self._output = weakref.ref(x), out
        return out


class InputDropout(nn.Module):
    """Drop-in for PEFT's ``lora_dropout`` module: dropout of the LoRA input with the mask of
    :class:`SharedMasks` (see the module docstring); the identity in eval mode."""

    def __init__(self, p: float, masks: SharedMasks) -> None:
        super().__init__()
        if not 0.0 < p < 1.0:
            raise ValueError(f"dropout probability must be in (0, 1), got {p}")
        self.p = p
        self.masks = masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return self.masks.output_for(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, shared per input"


def replace_lora_dropout(model: nn.Module, adapter: str) -> int:
    """Swap every ``nn.Dropout`` PEFT made for ``adapter`` for an :class:`InputDropout` with
    one shared mask cache; returns how many were swapped (0 when dropout is 0: PEFT then uses
    ``nn.Identity``)."""
    masks = SharedMasks()
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if (
            isinstance(dropouts, nn.ModuleDict)
            and adapter in dropouts
            and isinstance(dropouts[adapter], nn.Dropout)
        ):
            dropouts[adapter] = InputDropout(dropouts[adapter].p, masks)
            swapped += 1
    return swapped
