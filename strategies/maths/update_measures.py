"""What the similarity of two LoRA updates is measured on: factors, B alone, or ΔW = B·A.

The similarity-aware strategies compare client updates by cosine (``similarity.cosine_matrix``).
With a shared adapter θ = (A_l, B_l) per module l, sent θ⁰ and returned θ_k, three vectors can
stand for client k's update (docs/ALGORITHMS.md, task-similarity-aware aggregation, step 1;
issue 11):

- ``"factors"``: θ_k − θ⁰, every A and B entry. Depends on the gauge of the factorisation
  (B·A = (B G)(G⁻¹ A) for any invertible r×r G), and mixes A's update with B's.
- ``"b"``: the B entries of θ_k − θ⁰ only. From LoRA's B = 0 start, B is where a client's task
  shows first (∂L/∂A = Bᵀ·∂L/∂W vanishes at B = 0).
- ``"product"``: the per-module product update ΔW_l = B_l A_l − B⁰_l A⁰_l, the change of the
  model itself, which no gauge changes. ΔW_l is d_out×d_in (0.1–0.9 M entries per module of the
  bundled model), so it is never formed: each module's ΔW_l is sketched as

      Y_l = ΔW_l Ω_l = B_l (A_l Ω_l) − B⁰_l (A⁰_l Ω_l),    Ω_l ∈ R^{d_in×m}, entries N(0, 1/m)

  at O(r·(d_in + d_out)·m) flops (Johnson & Lindenstrauss 1984; the Gaussian sketch of Halko,
  Martinsson & Tropp 2011, https://arxiv.org/abs/0909.4061). Ω_l is drawn from a fixed seed,
  the module's index and d_in, so Y is a pure function of the update. When d_in ≤ m,
  Ω_l = I and Y_l = ΔW_l exactly.

Error bound of the product sketch. For updates X = (X_l), Y = (Y_l) over modules, with
independent Ω_l and M_l = X_lᵀ Y_l, ⟨XΩ, YΩ⟩ = Σ_l (1/m) Σ_c ω_cᵀ M_l ω_c with ω_c ~ N(0, I):

    E⟨XΩ, YΩ⟩ = ⟨X, Y⟩_F,
    Var⟨XΩ, YΩ⟩ = Σ_l (‖M_l‖_F² + tr(M_l²)) / m ≤ (2/m) Σ_l ‖X_l‖_F² ‖Y_l‖_F²
               ≤ (2ρ/m) ‖X‖_F² ‖Y‖_F²,        ρ = max_l ‖X_l‖_F² / ‖X‖_F²

(‖X_lᵀY_l‖_F ≤ ‖X_l‖_F‖Y_l‖_F). So by Chebyshev P(|⟨XΩ, YΩ⟩ − ⟨X, Y⟩| ≥ ε‖X‖‖Y‖) ≤
2ρ/(mε²): the sketch gains from the update being spread over many modules (ρ ≈ 1/210 when
the bundled model's 210 modules share it evenly; ρ = 1, the worst case, when one module holds
it all). With the default m = 16 the standard deviation per unit-norm inner product is at
most √(2ρ/16), 0.024 at ρ = 1/210. The strategies then count-sketch Y (``maths.sketch``) to a
fixed width, which adds its own √(2/k) at most; both are unbiased.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from strategies.maths import reproducible
from strategies.maths.lora_products import lora_pairs
from strategies.maths.reproducible import aligned_copy, aligned_empty, share_work

MEASURES = ("product", "b", "factors")
PROJECTION_WIDTH = 16  # m: columns of Ω per module (Y has Σ_l d_out·m ≈ D entries)
SEED = 0xC0_5E7A  # fixed: every process draws the same Ω for a module
# Modules of one shape multiplied together (the workspaces are GROUP x rows x d_out x m float64:
# 6 MiB for 8 rows of the bundled model's widest module; 60 at once were ~0.8 GB a round).
GROUP = 8


@dataclass(frozen=True)
class LoraModule:
    """Where one module's factors sit in a flat adapter (keys sorted, as ``flatten_state``)."""

    a: slice
    a_shape: tuple[int, int]  # r × d_in
    b: slice
    b_shape: tuple[int, int]  # d_out × r


def lora_modules(shapes: Mapping[str, tuple[int, ...]]) -> tuple[LoraModule, ...]:
    """The LoRA modules of a flat adapter with these key shapes, in prefix order."""
    offsets, start = {}, 0
    for key in sorted(shapes):
        size = int(np.prod(shapes[key], dtype=np.int64))
        offsets[key] = slice(start, start + size)
        start += size
    modules = []
    for a_key, b_key in lora_pairs(dict.fromkeys(shapes)).values():
        a_shape, b_shape = tuple(shapes[a_key]), tuple(shapes[b_key])
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
            raise ValueError(f"{b_key} {b_shape} @ {a_key} {a_shape} is not a LoRA product")
        modules.append(LoraModule(offsets[a_key], a_shape, offsets[b_key], b_shape))
    return tuple(modules)


@functools.lru_cache(maxsize=1024)
def projection(index: int, d_in: int, m: int = PROJECTION_WIDTH, seed: int = SEED) -> np.ndarray:
    """Ω for module ``index``: d_in×m with N(0, 1/m) entries, or I when d_in ≤ m (exact)."""
    if d_in <= m:
        omega = np.eye(d_in)
    else:
        omega = np.random.default_rng([seed, index, d_in, m]).normal(size=(d_in, m)) / np.sqrt(m)
    omega = aligned_copy(omega)  # cached aligned, so products never copy it again
    omega.flags.writeable = False
    return omega


class UpdateMeasure:
    """Maps (θ_k, θ⁰) flat adapters to the vector whose cosines define S, for one measure."""

    def __init__(
        self, measure: str, shapes: Mapping[str, tuple[int, ...]], m: int = PROJECTION_WIDTH
    ) -> None:
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
        self.measure, self.m = measure, m
        self.modules = lora_modules(shapes)
        groups: dict[tuple, list[int]] = {}  # modules of one shape, multiplied together
        for index, module in enumerate(self.modules):
            groups.setdefault((module.a_shape, module.b_shape), []).append(index)
        self._groups = tuple(  # at most GROUP modules a product: bounded workspaces
            tuple(indices[start : start + GROUP])
            for indices in groups.values()
            for start in range(0, len(indices), GROUP)
        )
        widths = [mod.b_shape[0] * min(mod.a_shape[1], m) for mod in self.modules]
        ends = np.cumsum([0, *widths]).tolist()
        self._columns = list(itertools.pairwise(ends))  # of each module's B (A Ω)
        self._stacked: dict[tuple[int, ...], np.ndarray] = {}  # the groups' stacked Ω
        self._buffers: dict[tuple, list[np.ndarray]] = {}  # (role, shapes) -> workspace
        self.input_size = sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())
        if measure != "factors" and not self.modules:
            raise ValueError(f"measure {measure!r} needs LoRA factors; the adapter has none")
        if measure == "b":
            self.size = sum(module.b.stop - module.b.start for module in self.modules)
        elif measure == "product":
            self.size = sum(mod.b_shape[0] * min(mod.a_shape[1], m) for mod in self.modules)
        else:
            self.size = self.input_size

    def features(self, theta: np.ndarray, sent: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write the update's vector (``size`` entries) into ``out`` and return it."""
        self.features_rows(theta[None, :], [sent], out[None, :])
        return out

    def features_rows(
        self, thetas: np.ndarray, sents: Sequence[np.ndarray], out: np.ndarray
    ) -> np.ndarray:
        """Row i of ``out`` (c x ``size``) = ``features(thetas[i], sents[i])``, the same bits.

        The product measure runs each module's two small products for the c rows at once
        (numpy's stacked matmul calls the same BLAS product per row, on the same shapes and
        64-byte-aligned operands as one row alone), so its Python cost is paid per module,
        not per module and client: 210 modules x 100 clients x 2 adapters were ~4 s a round.
        """
        if self.measure == "factors":
            for theta, sent, row in zip(thetas, sents, out, strict=True):
                np.subtract(theta, sent, out=row)
            return out
        if self.measure == "product":  # linear in ΔW: (B A − B⁰ A⁰) Ω = B (A Ω) − B⁰ (A⁰ Ω)
            return self._product_rows(thetas, sents, out)
        for theta, sent, row in zip(thetas, sents, out, strict=True):
            start = 0
            for module in self.modules:
                stop = start + module.b.stop - module.b.start
                np.subtract(theta[module.b], sent[module.b], out=row[start:stop])
                start = stop
        return out

    def _product_rows(
        self, thetas: np.ndarray, sents: Sequence[np.ndarray], out: np.ndarray
    ) -> np.ndarray:
        """B (A Ω) of the c rows minus that of their sent adapters (each distinct sent array
        once: every client gets the same one in round 1), subtracted in float64 straight
        into ``out``'s columns of each module. Modules of one shape (the same projection in
        every layer) are multiplied together: one stacked matmul per shape, not per module."""
        distinct: dict[int, int] = {}
        which = [distinct.setdefault(id(sent), len(distinct)) for sent in sents]
        unique = [sents[which.index(n)] for n in range(len(distinct))]
        # Groups write disjoint columns of ``out``, so threads share them: thread t takes every
        # t-th group (each shape's groups are consecutive, so both get a like share) with
        # workspaces of its own, aligned alike: the same BLAS calls on the same operands.
        slots = min(reproducible.WORKERS, len(self._groups))

        def run(slot: int) -> None:
            for indices in self._groups[slot::slots]:
                theta_parts = self._products(indices, thetas, f"theta-{slot}")
                sent_parts = self._products(indices, unique, f"sent-{slot}")
                for g, index in enumerate(indices):
                    start, stop = self._columns[index]
                    target = np.reshape(out[:, start:stop], theta_parts[g].shape, copy=False)
                    sent_part = sent_parts[g] if len(unique) == 1 else sent_parts[g][which]
                    np.subtract(theta_parts[g], sent_part, out=target)

        share_work(run, range(slots))
        return out

    def _products(
        self, indices: tuple[int, ...], flats: np.ndarray | Sequence[np.ndarray], role: str
    ) -> np.ndarray:
        """B (A Ω) of modules ``indices`` (one shape) for each flat adapter, G x c x d_out x w
        in float64. numpy's stacked matmul calls BLAS once per (module, row) on the shapes
        and 64-byte-aligned operands one module of one row alone has (kernel fixed by
        shape), so every row's bits are those of multiplying it alone."""
        first = self.modules[indices[0]]
        count, (rank, d_in), d_out = len(flats), first.a_shape, first.b_shape[0]
        omegas = self._omegas(indices)  # G x 1 x d_in x w: broadcast over the rows
        width = omegas.shape[-1]
        a, b, a_omega, product = self._workspace(
            role,
            count,
            [
                (len(indices), rank, d_in),
                (len(indices), d_out, rank),
                (len(indices), rank, width),
                (len(indices), d_out, width),
            ],
        )
        for g, index in enumerate(indices):
            module = self.modules[index]
            if isinstance(flats, np.ndarray):  # c x D rows: one strided copy per factor
                a[g] = flats[:, module.a].reshape(a.shape[1:])
                b[g] = flats[:, module.b].reshape(b.shape[1:])
            else:
                for i, flat in enumerate(flats):
                    a[g, i] = flat[module.a].reshape(module.a_shape)
                    b[g, i] = flat[module.b].reshape(module.b_shape)
        np.matmul(a, omegas, out=a_omega)
        return np.matmul(b, a_omega, out=product)

    def _workspace(
        self, role: str, count: int, shapes: list[tuple[int, int, int]]
    ) -> list[np.ndarray]:
        """Aligned float64 buffers G x ``count`` x m x n for ``shapes`` (G x m x n), reused by
        every chunk of rows and every group of that shape (views of the first ``count`` rows):
        allocating them afresh per chunk faulted in new pages each time (~5 ms a call at
        K = 1000)."""
        key = (role, tuple(shapes))
        held = self._buffers.get(key)
        if held is None or held[0].shape[1] < count:
            held = [aligned_empty((g, count, m, n), np.float64) for g, m, n in shapes]
            self._buffers[key] = held
        return [buffer[:, :count] for buffer in held]

    def _omegas(self, indices: tuple[int, ...]) -> np.ndarray:
        """The projections Ω of modules ``indices``, stacked (G x 1 x d_in x w, aligned)."""
        if indices not in self._stacked:
            d_in = self.modules[indices[0]].a_shape[1]
            parts = [projection(index, d_in, self.m) for index in indices]
            stacked = aligned_empty((len(parts), 1, *parts[0].shape), np.float64)
            stacked[:, 0] = parts
            self._stacked[indices] = stacked
        return self._stacked[indices]
