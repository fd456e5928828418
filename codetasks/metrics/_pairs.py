"""Input validation shared by the reference-based metrics in this package."""

from __future__ import annotations

from collections.abc import Sequence


def check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    """Raise ``ValueError`` unless predictions and references are equally long and non-empty.

    A silent 0.0 on an empty or misaligned list would hide a broken evaluation run.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
