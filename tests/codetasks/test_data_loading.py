"""load_task: name checks, source dispatch, limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codetasks import loading
from codetasks.data.records import DataError
from codetasks.loading import DEFAULT_DATA_ROOT, load_task

ROW = {"java": "int a();", "cs": "int A();"}


def test_unknown_task_and_split_list_valid_names() -> None:
    with pytest.raises(ValueError, match="valid: generation, translation, summarization"):
        load_task("chat", "train", data_root=DEFAULT_DATA_ROOT)
    with pytest.raises(ValueError, match="valid: train, valid, test"):
        load_task("generation", "validation", data_root=DEFAULT_DATA_ROOT)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_task("generation", "train", data_root=DEFAULT_DATA_ROOT, limit=0)


def test_jsonl_source_substitutes_the_split(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("valid", 1)):
        rows = [{**ROW, "uid": f"{split}-{i}"} for i in range(n)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(map(json.dumps, rows)))
    source = str(tmp_path / "{split}.jsonl")
    train = load_task("translation", "train", data_root=tmp_path, source=source, limit=2)
    assert [e.uid for e in train] == ["train-0", "train-1"]
    valid = load_task("translation", "valid", data_root=tmp_path, source=source)
    assert [e.uid for e in valid] == ["valid-0"]


def test_humaneval_source_only_for_generation_test() -> None:
    examples = load_task("generation", "test", data_root=DEFAULT_DATA_ROOT, source="humaneval")
    assert len(examples) == 164
    with pytest.raises(ValueError, match="split='test'"):
        load_task("generation", "train", data_root=DEFAULT_DATA_ROOT, source="HumanEval")


def test_directory_source_is_mined_for_summarization_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="summarization only"):
        load_task("translation", "train", data_root=tmp_path, source=str(tmp_path))


def test_other_sources_go_to_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(loading, "load_hub", lambda *args: calls.append(args) or ["x"])
    out = load_task("summarization", "valid", data_root=Path("."), source="org/data")
    assert (out, calls) == (["x"], [("summarization", "org/data", "valid")])


@pytest.mark.skipif(not DEFAULT_DATA_ROOT.is_dir(), reason="shared data not present")
def test_offline_defaults() -> None:
    gen = load_task("generation", "valid", data_root=DEFAULT_DATA_ROOT, limit=5)
    assert [e.task for e in gen] == ["generation"] * 5
    trans = load_task("translation", "valid", data_root=DEFAULT_DATA_ROOT)
    assert len(trans) == 499
    with pytest.raises(DataError, match=r"mbpp-sanitized/test\.jsonl does not exist"):
        load_task("generation", "test", data_root=DEFAULT_DATA_ROOT)
