"""Users' JSONL files: accepted schemas and line-numbered errors."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codetasks.data.jsonl import DataError, load_jsonl, read_json_object
from codetasks.examples import TASK_NAMES


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


# Records with the fields the loaders read (and one they do not) holding JSON values of any type,
# among them code that ast cannot take (NUL bytes, nesting too deep for its parser or unparser).
_FIELDS = ["text", "prompt", "code", "test_list", "test_setup_code", "task_id", "uid", "java",
           "cs", "source", "target", "docstring", "canonical_solution", "entry_point",
           "other"]  # fmt: skip
_CODE = [
    'def f():\n    "Doc here."\n    return 1',
    "assert f() == 1",
    "def f(:",
    "f(\x00)",
    "x = " + "-" * 3000 + "1",
    'def f():\n    "D."\n    return ' + "not " * 3000 + "1",
]
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(_CODE)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
_RECORDS = st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=6).map(json.dumps)
# Lines that are not records: deep nesting, over-long numbers, BOMs, NUL bytes, lone carriage
# returns, invalid or truncated UTF-8, broken syntax, a bare JSON value.
_RAW_TEXT = [
    "[" * 5000,
    '{"a": ' * 3000 + "1" + "}" * 3000,
    "9" * 5000,
    '{"task_id": ' + "9" * 5000 + "}",
    "\ufeff{}",
    "{}\ufeff",
    "\x00",
    "{}\r{}",
    "\u2028",
    '{"text": "a"',
    "[1, 2]",
    '"text"',
    "NaN",
]
_RAW = (
    st.sampled_from([text.encode() for text in _RAW_TEXT])
    | st.sampled_from([b"\xff", b'{"text": "\xc3"}', b"\xef\xbb"])
    | st.binary(max_size=30)
)


@given(
    lines=st.lists(_RECORDS.map(str.encode) | _RAW, max_size=5), task=st.sampled_from(TASK_NAMES)
)
def test_any_file_loads_or_is_a_data_error_naming_it(lines: list[bytes], task: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hostile.jsonl"
        path.write_bytes(b"\n".join(lines))
        try:
            examples = load_jsonl(task, path)
        except DataError as error:
            message = str(error)
            assert "\n" not in message and str(path) in message
            assert message.startswith((f"{path}:", f"no examples in {path}"))
        else:
            assert examples and all(e.task == task for e in examples)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
        ('{"text": ' + "1" * 5000 + "}", "Exceeds the limit (4300 digits)"),
    ],
)
def test_deep_nesting_and_huge_numbers_are_malformed_json(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = _write(tmp_path / "deep.jsonl", [GEN, line])
    with pytest.raises(DataError) as info:
        load_jsonl("generation", path)
    assert str(info.value).startswith(f"{path}:2: malformed JSON: {reason}")


def test_code_too_deep_for_ast_still_loads(tmp_path: Path) -> None:
    deep = "x = " + "-" * 100_000 + "1"
    rows = [{**GEN, "code": deep}, {**GEN, "test_list": [f"assert f({deep[4:]})"]}]
    first, second = load_jsonl("generation", _write(tmp_path / "g.jsonl", rows))
    assert (first.meta["entry_point"], second.meta["entry_point"]) == ("", "add")
    code = 'def f():\n    "Doc."\n    return ' + "-" * 100_000 + "1"
    (example,) = load_jsonl(
        "summarization", _write(tmp_path / "s.jsonl", [{"code": code, "docstring": "Doc."}])
    )
    assert example.source == code  # left as it is, like code that does not parse


def test_a_byte_order_mark_opening_the_file_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"source": "a", "target": "b"}).encode())
    (example,) = load_jsonl("translation", path)
    assert (example.uid, example.source) == ("bom/0", "a")


def test_null_setup_code_means_none(tmp_path: Path) -> None:
    path = _write(tmp_path / "n.jsonl", [{**GEN, "test_setup_code": None}])
    assert load_jsonl("generation", path)[0].test_setup == ""


@pytest.mark.parametrize(("row", "name"), [({"source": " ", "target": "b"}, "source"),
                                           ({"java": "a", "cs": ""}, "target")])  # fmt: skip
def test_empty_translation_pairs_are_errors(tmp_path: Path, row: dict, name: str) -> None:
    path = _write(tmp_path / "t.jsonl", [row])
    with pytest.raises(DataError) as info:
        load_jsonl("translation", path)
    assert str(info.value) == f"{path}:1: empty {name}"


def test_a_directory_or_unreadable_file_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    with pytest.raises(DataError, match=f"^{folder} is not a regular file$"):
        load_jsonl("translation", folder)
    path = _write(tmp_path / "locked.jsonl", [GEN])

    def denied(self: Path) -> bytes:  # chmod 000 does not stop root, who may run the tests
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=rf"^{path}: cannot read \(Permission denied\)$"):
        load_jsonl("generation", path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{**GEN, "task_id": 7}, GEN, {**GEN, "task_id": 7}],
         "train.jsonl:3: uid 'train/7' repeats"),
        ([{**GEN, "uid": "a"}, {**GEN, "uid": "a"}], "train.jsonl:2: uid 'a' repeats"),
        ([GEN, {**GEN, "task_id": 0}], "train.jsonl:2: uid 'train/0' repeats"),  # index 0, id 0
        ([{**GEN, "uid": 5}], "train.jsonl:1: field 'uid' must be a string, got int"),
    ],
)  # fmt: skip
def test_uids_are_strings_and_never_repeat(tmp_path: Path, rows: list, message: str) -> None:
    """The partition and the held-out split tell examples apart by uid."""
    with pytest.raises(DataError, match=message.replace("[", r"\[")):
        load_jsonl("generation", _write(tmp_path / "train.jsonl", rows))


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{torn", r"not JSON \(Expecting property name enclosed in double quotes at line 1\)"),
        (b"\xff", r"not readable JSON \(UnicodeDecodeError\)"),
        (b"[" * 100_000, r"not readable JSON \(RecursionError\)"),
        (b"1" * 5000, r"not readable JSON \(ValueError\)"),
        (b"[1]", "expected a JSON object, got list"),
    ],
)
def test_a_json_object_file_that_is_not_one_is_a_data_error_naming_it(tmp_path, content, why):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {why}$"):
        read_json_object(path)
    path.write_text('{"a": [1]}')
    assert read_json_object(path) == {"a": [1]}
