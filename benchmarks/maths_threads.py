"""The aggregation maths that threads share, on one thread against two, side by side.

``strategies.maths.reproducible.share_work`` runs independent pieces of the aggregation maths on
up to ``WORKERS`` threads: the product similarity measure's module groups
(``update_measures.UpdateMeasure.features_rows``) and the dense mixtures' column blocks
(``mixture.sparse_mixtures`` while K <= 16 (m + 1); the gathered path above that is not
shared). The bits do not depend on the threads (tested); this measures what they buy.

Both settings run in one process, alternating, on the same data (K rows of the bundled model's
shared-adapter layout with random values; every row sent its own adapter, as
``similarity-weighted`` sends from round 2 on), so a slow spell of this shared machine hits both
alike. The first repeat of each warms the workspaces and is not counted. One JSON line per
piece and thread count: the min and median seconds over the counted repeats.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/maths_threads.py [--clients 100]
        [--layers 30] [--repeats 4]

``OPENBLAS_NUM_THREADS=1`` as in ``aggregation_speed.py``: BLAS's own threads would otherwise
compete with these.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from benchmarks.aggregation_speed import LAYERS, smollm2_shapes
from strategies.maths import reproducible
from strategies.maths.mixture import sparse_mixtures, top_peers
from strategies.maths.reproducible import aligned_empty
from strategies.maths.update_measures import UpdateMeasure

ROWS = 8  # rows measured at a time, as ``strategies.updates`` does
PEERS = 8  # strategy.top-peers' default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--layers", type=int, default=LAYERS)
    parser.add_argument("--repeats", type=int, default=4, help="per setting, the first not counted")
    args = parser.parse_args()
    K, shapes = args.clients, smollm2_shapes(args.layers)
    D = sum(int(np.prod(shape)) for shape in shapes.values())
    rng = np.random.default_rng(0)
    thetas = aligned_empty((K, D), np.float32)
    thetas[...] = rng.standard_normal((K, D), np.float32) * np.float32(0.02)
    sents = [thetas[(k + 1) % K] for k in range(K)]  # each row's own sent adapter
    measure = UpdateMeasure("product", shapes)
    features = np.empty((K, measure.size), np.float32)
    W = rng.random((K, K))
    sparse = top_peers(W / W.sum(axis=1, keepdims=True), PEERS)
    mean, mixtures = thetas.mean(axis=0), aligned_empty((K, D), np.float32)

    def product_measure() -> None:
        for start in range(0, K, ROWS):
            rows = slice(start, start + ROWS)
            measure.features_rows(thetas[rows], sents[rows], features[rows])

    def mixture() -> None:
        sparse_mixtures(thetas, sparse, mean, 0.5, out=mixtures)

    pieces = {"product-measure": product_measure, "mixtures": mixture}
    seconds: dict[tuple[str, int], list[float]] = {}
    for repeat in range(args.repeats):
        for workers in (1, 2):
            reproducible.WORKERS = workers
            for name, run in pieces.items():
                start = time.perf_counter()
                run()
                if repeat:
                    seconds.setdefault((name, workers), []).append(time.perf_counter() - start)
    for (name, workers), times in sorted(seconds.items()):
        line = {
            "piece": name,
            "clients": K,
            "layers": args.layers,
            "adapter_values": D,
            "workers": workers,
            "min_seconds": round(min(times), 4),
            "median_seconds": round(statistics.median(times), 4),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
