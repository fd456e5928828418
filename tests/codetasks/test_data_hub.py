"""The hub path, on local JSON files with each hub dataset's schema.

Only the ``datasets.load_dataset`` call boundary is replaced: the fake checks the hub ID,
config and split our code asks for, then loads a local JSON file with the real ``datasets``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest

from codetasks.data import hub
from codetasks.loading import load_task

REAL_LOAD_DATASET = datasets.load_dataset

MBPP_ROW = {
    "source_file": "Benchmark Questions Verification V2.ipynb",
    "task_id": 562,
    "prompt": "Write a python function to find the length of the longest sublists.",
    "code": "def Find_Max_Length(lst):\n    return max(len(x) for x in lst)",
    "test_imports": [],
    "test_list": ["assert Find_Max_Length([[1],[1,4],[5,6,7,8]]) == 4"],
}
TRANS_ROW = {"id": 7, "java": "public int f() {return 1;}", "cs": "public int F(){return 1;}"}
CODE = 'def add(a, b):\n    """Add two numbers.\n\n    More.\n    """\n    return a + b'
PY2_CODE = 'def show(x):\n    """Print x."""\n    print x'
SUM_ROWS = [
    {
        "id": number,
        "repo": "o/r",
        "path": "m.py",
        "func_name": name,
        "original_string": code,
        "language": "python",
        "code": code,
        "code_tokens": code.split(),
        "docstring": doc,
        "docstring_tokens": doc.split(),
        "sha": "0" * 40,
        "url": "https://example.invalid",
    }
    for number, name, code, doc in [
        (3, "add", CODE, "Add two numbers.\n\nMore."),
        (4, "show", PY2_CODE, "Print x."),
    ]
]


def _fake_hub(
    tmp_path: Path, rows: list[dict[str, Any]], calls: list[tuple[Any, ...]]
) -> Callable[..., datasets.Dataset]:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    def load_dataset(path: str, name: str | None = None, *, split: str) -> datasets.Dataset:
        calls.append((path, name, split))
        return REAL_LOAD_DATASET(
            "json", data_files={split: str(data)}, split=split, cache_dir=str(tmp_path / "hf")
        )

    return load_dataset


@pytest.fixture
def calls() -> list[tuple[Any, ...]]:
    return []


def test_mbpp_uses_the_sanitized_config_and_keeps_offline_uids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[tuple[Any, ...]]
) -> None:
    monkeypatch.setattr(datasets, "load_dataset", _fake_hub(tmp_path, [MBPP_ROW], calls))
    (example,) = hub.load_hub("generation", "google-research-datasets/mbpp", "valid")
    assert calls == [("google-research-datasets/mbpp", "sanitized", "validation")]
    assert example.uid == "mbpp/562"
    assert example.source == MBPP_ROW["prompt"]
    assert example.tests == tuple(MBPP_ROW["test_list"])
    assert example.meta["entry_point"] == "Find_Max_Length"


def test_translation_through_load_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[tuple[Any, ...]]
) -> None:
    monkeypatch.setattr(datasets, "load_dataset", _fake_hub(tmp_path, [TRANS_ROW], calls))
    source = "google/code_x_glue_cc_code_to_code_trans"
    (example,) = load_task("translation", "test", data_root=tmp_path, source=source)
    assert calls == [(source, None, "test")]
    assert (example.uid, example.source, example.target) == (
        "codexglue-java-cs/test/7",
        TRANS_ROW["java"],
        TRANS_ROW["cs"],
    )


def test_code_to_text_strips_docstrings_and_takes_the_first_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[tuple[Any, ...]]
) -> None:
    monkeypatch.setattr(datasets, "load_dataset", _fake_hub(tmp_path, SUM_ROWS, calls))
    added, shown = hub.load_hub("summarization", "google/code_x_glue_ct_code_to_text", "train")
    assert calls == [("google/code_x_glue_ct_code_to_text", "python", "train")]
    assert added.uid == "code_x_glue_ct_code_to_text/train/3"
    assert (added.source, added.target) == ("def add(a, b):\n    return a + b", "Add two numbers.")
    # Python 2 code does not parse, so it is kept whole rather than guessed at.
    assert (shown.source, shown.target) == (PY2_CODE, "Print x.")


def test_explicit_config_and_split_names() -> None:
    assert hub.parse_hub_source("google-research-datasets/mbpp:full") == (
        "google-research-datasets/mbpp",
        "full",
    )
    assert hub.parse_hub_source("someone/data") == ("someone/data", None)
    assert hub.uid_prefix("someone/data", "valid") == "data/valid"
    with pytest.raises(ValueError, match="valid: train, valid, test"):
        hub.hub_split("validation")
