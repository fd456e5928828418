"""A seeded count sketch of client updates: cosines in O(K·D + K²·k) instead of O(K²·D).

The similarity-aware strategies need S_ij = cos(Δ_i, Δ_j) for every pair of the K clients of a
round. The exact Gram matrix costs K²·D flops (4.8·10¹⁰ at K = 100 and the bundled adapter's
D = 2.44 M; 100 times that at K = 1000). Instead each update is projected to k ≪ D numbers by a
count sketch (Charikar, Chen & Farach-Colton 2002, https://doi.org/10.1007/3-540-45465-9_59;
as "feature hashing" in Weinberger et al. 2009, https://arxiv.org/abs/0902.2206), a sparse
Johnson–Lindenstrauss transform with one ±1 per coordinate:

    (S x)_b = Σ_{i : h(i) = b} σ_i x_i,      σ_i = ±1 at random,  h(i) ∈ {0, …, k−1}

Here the coordinates are cut into blocks of k consecutive ones; block t is added at a random
cyclic shift c_t, h(i) = (i + c_t) mod k, which lets the sketch run as one vector add per block
(O(K·D) in all, no scatter). Two coordinates of one block never collide; two of different blocks
collide with probability exactly 1/k. With independent random signs this gives the count
sketch's guarantee for every pair of vectors x, y (expectation over σ and c):

    E[⟨Sx, Sy⟩] = ⟨x, y⟩,      Var[⟨Sx, Sy⟩] ≤ (‖x‖²‖y‖² + ⟨x, y⟩²) / k ≤ 2‖x‖²‖y‖² / k

(the variance is (1/k)·Σ over pairs i ≠ j in different blocks of x_i²y_j² + x_i y_i x_j y_j).
By Chebyshev, P(|⟨Sx, Sy⟩ − ⟨x, y⟩| ≥ ε‖x‖‖y‖) ≤ 2 / (k ε²). If ⟨x, y⟩, ‖x‖² and ‖y‖² are each
within ε (relative to ‖x‖‖y‖, ‖x‖², ‖y‖²), the sketched cosine is within 2ε / (1 − ε) of the
true one. The default k = 8192 gives a standard deviation of at most √(2/k) = 0.016 per inner
product of unit vectors, against the gaps of 0.1–0.5 between same-task and cross-task
similarities measured on the bundled model (docs/ALGORITHMS.md).

The signs and shifts come from a fixed seed and depend on D only, so a sketch is a pure function
of the update: the same update gives the same bits in any round, process or memory layout
(accumulation is element-wise float64 in block order, see ``strategies.maths.reproducible``).
When D ≤ k a sketch would not be smaller, and ``sketch_rows`` returns the updates themselves:
the cosines are then exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SEED = 0x5EED_C0DE  # fixed: every process draws the same signs and shifts for a given D
DEFAULT_WIDTH = 8192
_ROWS_PER_PASS = 8  # rows sketched together: fewer Python-level block loops, small buffers


@dataclass(frozen=True)
class CountSketch:
    """The random part of a count sketch for vectors of ``size`` entries, ``width`` buckets."""

    size: int
    width: int
    signs: np.ndarray  # (size,) float32, each ±1
    shifts: np.ndarray  # (ceil(size / width),) int64 in [0, width): the shift of each block

    @property
    def exact(self) -> bool:
        """True when the vectors are kept whole (size ≤ width): cosines are then exact."""
        return self.size <= self.width

    @property
    def out_width(self) -> int:
        return self.size if self.exact else self.width


@functools.lru_cache(maxsize=8)
def count_sketch(size: int, width: int = DEFAULT_WIDTH, seed: int = SEED) -> CountSketch:
    """The seeded sketch for vectors of ``size`` entries (cached per layout)."""
    if size < 1 or width < 1:
        raise ValueError(f"size and width must be >= 1, got {size} and {width}")
    rng = np.random.default_rng([seed, size, width])
    signs = np.where(rng.random(size) < 0.5, -1.0, 1.0).astype(np.float32)
    shifts = rng.integers(0, width, size=-(-size // width), dtype=np.int64)
    signs.flags.writeable = shifts.flags.writeable = False
    return CountSketch(size, width, signs, shifts)


def _sketch_block_of_rows(rows: np.ndarray, sketch: CountSketch, out: np.ndarray) -> None:
    """Sketch the c×D ``rows`` into ``out`` (c×k float64), block by block in a fixed order."""
    k, c = sketch.width, rows.shape[0]
    wide = np.zeros((c, 2 * k), dtype=np.float64)  # a cyclic shift is a shift into 2k, folded
    term = np.empty((c, k), dtype=np.float64)
    for block, shift in enumerate(sketch.shifts.tolist()):
        start = block * k
        stop = min(start + k, sketch.size)
        n = stop - start
        np.multiply(rows[:, start:stop], sketch.signs[start:stop], out=term[:, :n])
        wide[:, shift : shift + n] += term[:, :n]
    np.add(wide[:, :k], wide[:, k:], out=out)


def sketch_rows(rows: np.ndarray, sketch: CountSketch) -> np.ndarray:
    """K×D rows -> K×k float64 sketches (K×D float64 copies when ``sketch.exact``)."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != sketch.size:
        raise ValueError(f"rows must be K×{sketch.size}, got shape {rows.shape}")
    if sketch.exact:
        return rows.astype(np.float64)
    out = np.empty((rows.shape[0], sketch.width), dtype=np.float64)
    for start in range(0, rows.shape[0], _ROWS_PER_PASS):
        stop = min(start + _ROWS_PER_PASS, rows.shape[0])
        _sketch_block_of_rows(rows[start:stop], sketch, out[start:stop])
    return out
