"""Compute precision: bf16 matmuls where the hardware does them well, fp32 elsewhere.

Mixed precision (Micikevicius et al. 2018, arXiv 1710.03740; bf16: Kalamkar et al. 2019,
arXiv 1905.12322) runs the matrix products in a 16-bit type and keeps the trainable weights,
the optimizer, the residual stream's additions and the loss in fp32. bf16 keeps fp32's exponent
range, so no loss scaling is needed. It pays on CUDA and on CPUs with native bf16 dot products
(AVX512-BF16, AMX); elsewhere the CPU emulates it and it is slower than fp32.

``train.compute-dtype`` picks it: ``auto`` (the default) resolves to bf16 on CUDA GPUs that
support it natively (Ampere and later) and on such CPUs, fp32 otherwise. The choice covers the
NF4 compute dtype (``bnb_4bit_compute_dtype``), the ``torch.autocast`` region of training,
evaluation loss and generation.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch

from runconfig.schema import COMPUTE_DTYPES

_BY_NAME = {"fp32": torch.float32, "bf16": torch.bfloat16}
# /proc/cpuinfo flags of native bf16 dot products: AVX512-BF16 (Cooper Lake, Zen 4 and later)
# and AMX-BF16 (Sapphire Rapids and later).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# Attribute on a loaded base model naming the dtype its forward passes compute in.
ATTRIBUTE = "fedcolora_compute_dtype"


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: /proc/cpuinfo's flags, else torch's probe."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return bool(cpu_flags(cpuinfo.read_text()) & set(BF16_CPU_FLAGS))
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's cpuinfo checks
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for the ``train.compute-dtype`` setting ``name`` on ``device``."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype {name!r}; valid: {', '.join(COMPUTE_DTYPES)}")
    if name != "auto":
        return _BY_NAME[name]
    if device.type == "cuda":  # Ampere and later; older GPUs emulate bf16 slowly
        fast = torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        fast = device.type == "cpu" and cpu_has_fast_bf16()
    return torch.bfloat16 if fast else torch.float32


def of(model: torch.nn.Module) -> torch.dtype:
    """The compute dtype a model was loaded for (fp32 if it was not loaded by this package)."""
    return getattr(model, ATTRIBUTE, torch.float32)


@contextlib.contextmanager
def autocast(model: torch.nn.Module) -> Iterator[None]:
    """Run the enclosed forward passes in ``model``'s compute dtype (nothing for fp32)."""
    dtype = of(model)
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        yield
