"""Lossy codecs for the shared adapter on the wire: bfloat16 and blockwise int8.

Pure NumPy, elementwise and therefore deterministic: the same input gives the same bytes on
every machine and in every memory layout, which keeps a resumed run bit-identical.

- ``fp32``: the arrays as they are (4 bytes a value).
- ``bf16``: the upper 16 bits of each float32, rounded to nearest even (2 bytes a value;
  relative error ≤ 2⁻⁸). Google Brain's bfloat16 (Kalamkar et al. 2019,
  https://arxiv.org/abs/1905.12322).
- ``int8``: each tensor, flattened, in rows of ``block`` values with one float32 scale per
  row (``<key>::scale``; the int8 values keep the tensor's shape): q = round(x / s),
  s = max|row| / 127, so |x − s·q| ≤ s / 2 (1 byte a value plus 4 / ``block``). Blockwise
  absmax quantisation as in bitsandbytes (Dettmers et al. 2022,
  https://arxiv.org/abs/2110.02861). A row of zeros gets s = 1, so a valid payload never has a
  zero scale, and the decoder can reject one.

``encode`` returns the wire arrays (``int8`` adds ``<key>::scale``); ``decode`` checks a payload
against the shapes it must decode to and raises :class:`CodecError` with the reason on anything
else: a missing or extra key, a wrong dtype or shape, a NaN, Inf, zero or negative scale.
Uplinks carry the client's *update* (trained − received), which is small, so its quantisation
error is small next to the update itself (FedPAQ, Reisizadeh et al. 2020,
https://arxiv.org/abs/1909.13014); ``colora.compression`` applies it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from runconfig.schema import CODECS

SCALE_SUFFIX = "::scale"
INT8_MAX = 127


class CodecError(ValueError):
    """A payload that does not decode to what was expected; the message says why."""


def _bf16_encode(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    # Round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, then truncate.
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def _bf16_decode(q: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if q.dtype != np.uint16 or q.shape != shape:
        raise CodecError(f"bf16 payload must be uint16 {shape}, got {q.dtype} {q.shape}")
    return (q.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _rows(size: int, block: int) -> int:
    return -(-size // block)


def _int8_encode(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """q in ``x``'s shape and one scale per row of ``block`` values of the flattened ``x``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows = np.zeros(_rows(x.size, block) * block, dtype=np.float32)
    rows[: x.size] = x.ravel()
    rows = rows.reshape(-1, block)
    absmax = np.abs(rows).max(axis=1)
    scale = np.where(absmax > 0, absmax / np.float32(INT8_MAX), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(rows / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q.ravel()[: x.size].reshape(x.shape), scale


def _int8_decode(
    q: np.ndarray, scale: np.ndarray, shape: tuple[int, ...], block: int
) -> np.ndarray:
    if q.dtype != np.int8 or q.shape != shape:
        raise CodecError(f"int8 payload must be int8 {shape}, got {q.dtype} {q.shape}")
    rows = _rows(q.size, block)
    if scale.dtype != np.float32 or scale.shape != (rows,):
        raise CodecError(f"int8 scales must be float32 ({rows},), got {scale.dtype} {scale.shape}")
    if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise CodecError("int8 scales must be finite and > 0 (a NaN, Inf or zero scale)")
    padded = np.zeros(rows * block, dtype=np.float32)
    padded[: q.size] = q.ravel()
    return (padded.reshape(rows, block) * scale[:, None]).ravel()[: q.size].reshape(shape)


def encode(arrays: Mapping[str, np.ndarray], codec: str, block: int) -> dict[str, np.ndarray]:
    """The wire arrays of float32 ``arrays`` under ``codec``."""
    if codec == "fp32":
        return {key: np.asarray(value) for key, value in arrays.items()}
    if codec == "bf16":
        return {key: _bf16_encode(value) for key, value in arrays.items()}
    if codec == "int8":
        out: dict[str, np.ndarray] = {}
        for key, value in arrays.items():
            out[key], out[key + SCALE_SUFFIX] = _int8_encode(value, block)
        return out
    raise CodecError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")


def wire_keys(keys: list[str], codec: str) -> set[str]:
    """The keys a payload of ``keys`` carries on the wire under ``codec``."""
    extra = [key + SCALE_SUFFIX for key in keys] if codec == "int8" else []
    return {*keys, *extra}


def decode(
    wire: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]],
    codec: str,
    block: int,
) -> dict[str, np.ndarray]:
    """float32 arrays of ``shapes`` from the wire arrays; CodecError names what is wrong."""
    expected = wire_keys(list(shapes), codec)
    if set(wire) != expected:
        missing, extra = sorted(expected - set(wire)), sorted(set(wire) - expected)
        raise CodecError(f"{codec} payload keys differ: missing {missing[:3]}, extra {extra[:3]}")
    out: dict[str, np.ndarray] = {}
    for key, shape in shapes.items():
        value = np.asarray(wire[key])
        if codec == "fp32":
            if value.dtype != np.float32 or value.shape != tuple(shape):
                raise CodecError(f"'{key}': fp32 payload must be float32 {tuple(shape)}")
            out[key] = value
        elif codec == "bf16":
            out[key] = _bf16_decode(value, tuple(shape))
        else:
            scale = np.asarray(wire[key + SCALE_SUFFIX])
            out[key] = _int8_decode(value, scale, tuple(shape), block)
    return out


def roundtrip(arrays: Mapping[str, np.ndarray], codec: str, block: int) -> dict[str, np.ndarray]:
    """What the receiver of ``encode(arrays)`` reconstructs (the sender computes it too)."""
    shapes = {key: np.shape(value) for key, value in arrays.items()}
    return decode(encode(arrays, codec, block), shapes, codec, block)
