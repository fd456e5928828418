"""MBPP, sanitized (Austin et al. 2021, arXiv 2108.07732): Python problems with reference code
and assert tests, for the generation task.

Offline files live in ``<data_root>/mbpp-sanitized/`` (``train.jsonl``, ``validation.jsonl``,
``prompt.jsonl``; the test split is deliberately absent). The same records come from the hub
as ``google-research-datasets/mbpp`` config ``sanitized``, where the problem text is ``prompt``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from codetasks.data.jsonl import read_jsonl
from codetasks.data.records import (
    DataError,
    Record,
    confined,
    examples_from_numbered,
    examples_from_records,
)
from codetasks.examples import Example

MBPP_DIR = "mbpp-sanitized"
MBPP_HUB_ID = "google-research-datasets/mbpp"
# Our split name → MBPP's file stem ("prompt" holds MBPP's few-shot prompt problems).
MBPP_FILES: dict[str, str] = {
    "train": "train",
    "valid": "validation",
    "test": "test",
    "prompt": "prompt",
}


def mbpp_from_records(records: Iterable[Record], origin: str = "mbpp") -> list[Example]:
    """MBPP records (hub or file, ``text`` or ``prompt`` field) → generation examples with
    uids ``mbpp/<task_id>``."""
    return examples_from_records("generation", records, prefix="mbpp", origin=origin)


def mbpp_path(split: str, root: Path) -> Path:
    """The offline file for ``split`` under the data root ``root``."""
    if split not in MBPP_FILES:
        raise ValueError(f"unknown MBPP split {split!r}; valid: {', '.join(MBPP_FILES)}")
    return root / MBPP_DIR / f"{MBPP_FILES[split]}.jsonl"


def load_mbpp(split: str, root: Path) -> list[Example]:
    """MBPP-sanitized ``split`` (train/valid/test/prompt) from ``<root>/mbpp-sanitized``."""
    path = confined(mbpp_path(split, root), root / MBPP_DIR)
    if not path.exists():
        raise DataError(
            f"MBPP split {split!r} is not available offline: {path} does not exist. "
            f"Load it from the hub with source={MBPP_HUB_ID!r} (config 'sanitized'), "
            "or evaluate generation on HumanEval with source='humaneval'."
        )
    return examples_from_numbered("generation", read_jsonl(path), prefix="mbpp", origin=str(path))
