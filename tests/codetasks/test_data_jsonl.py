"""Users' JSONL files: accepted schemas and line-numbered errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codetasks.data.jsonl import DataError, load_jsonl


def _write(path: Path, rows: list[object], blank_after_first: bool = False) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    if blank_after_first:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GEN = {
    "text": "Add.",
    "code": "def add(a, b):\n    return a + b",
    "test_list": ["assert add(1, 2) == 3"],
}


def test_generation_rows_become_examples(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "train.jsonl", [GEN, {**GEN, "task_id": 9, "test_setup_code": "x = 1"}]
    )
    first, second = load_jsonl("generation", path)
    assert (first.uid, first.source, first.tests) == ("train/0", "Add.", ("assert add(1, 2) == 3",))
    assert first.meta["entry_point"] == "add"
    assert (second.uid, second.test_setup) == ("train/9", "x = 1")


def test_translation_accepts_codexglue_and_generic_fields(tmp_path: Path) -> None:
    rows = [{"java": " int a(); ", "cs": "int A();"}, {"source": "x", "target": "y", "uid": "u"}]
    first, second = load_jsonl("translation", _write(tmp_path / "t.jsonl", rows))
    assert (first.uid, first.source, first.target) == ("t/0", "int a();", "int A();")
    assert (second.uid, second.source, second.target) == ("u", "x", "y")


def test_summarization_removes_the_docstring_and_keeps_its_first_sentence(tmp_path: Path) -> None:
    code = 'def f(x):\n    """Return x plus one.\n\n    Details.\n    """\n    return x + 1'
    rows = [{"code": code, "docstring": "Return x plus one.\n\nDetails."}]
    (example,) = load_jsonl("summarization", _write(tmp_path / "s.jsonl", rows))
    assert example.source == "def f(x):\n    return x + 1"
    assert example.target == "Return x plus one."


def test_ill_typed_field_names_file_line_and_type(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.jsonl", [GEN, {**GEN, "test_list": 3}], blank_after_first=True)
    with pytest.raises(DataError) as info:
        load_jsonl("generation", path)
    assert str(info.value) == f"{path}:3: field 'test_list' must be a list of strings, got int"


def test_list_with_non_strings_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", [{**GEN, "test_list": ["assert 1", 2]}])
    with pytest.raises(
        DataError, match=r":1: field 'test_list' must be a list of strings, got list"
    ):
        load_jsonl("generation", path)


@pytest.mark.parametrize(
    ("task", "row", "message"),
    [
        ("generation", {"code": "c", "test_list": []}, "missing field 'text' or 'prompt'"),
        ("translation", {"java": "x"}, "missing field 'cs'"),
        ("translation", {"code": "x"}, "missing field 'java' (or 'source' with 'target')"),
        (
            "summarization",
            {"code": "x", "docstring": 1},
            "field 'docstring' must be a string, got int",
        ),
        ("summarization", {"source": "x", "target": " "}, "empty summary"),
        ("summarization", ["not", "an", "object"], "expected a JSON object, got list"),
    ],
)
def test_missing_fields(tmp_path: Path, task: str, row: object, message: str) -> None:
    path = _write(tmp_path / "d.jsonl", [row])
    with pytest.raises(DataError) as info:
        load_jsonl(task, path)
    assert str(info.value) == f"{path}:1: {message}"


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", [GEN, "{oops"])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        load_jsonl("generation", path)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^no examples in {path}$"):
        load_jsonl("translation", path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_jsonl("translation", tmp_path / "nope.jsonl")


def test_invalid_utf8_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    good = json.dumps(GEN).encode()
    path.write_bytes(good + b"\n\n" + b'{"text": "caf\xe9", "code": "x", "test_list": []}\n')
    with pytest.raises(DataError) as info:
        load_jsonl("generation", path)
    assert str(info.value) == (
        f"{path}:3: not valid UTF-8 (invalid continuation byte: byte 0xe9 at column 14)"
    )


def test_lone_surrogates_and_empty_test_lists_load_for_evaluation_to_skip(tmp_path: Path) -> None:
    rows = [GEN, {**GEN, "test_list": []}, '{"text": "\\ud800", "code": "x", "test_list": ["a"]}']
    examples = load_jsonl("generation", _write(tmp_path / "v.jsonl", rows))
    assert [e.tests for e in examples[1:]] == [(), ("a",)]  # scoring skips them, with reasons
    assert examples[2].source == "\ud800"
