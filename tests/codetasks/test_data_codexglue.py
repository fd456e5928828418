"""CodeXGLUE Java→C# loading from parallel line files."""

from __future__ import annotations

from pathlib import Path

import pytest

from codetasks.data.codexglue import load_codexglue_java_cs, read_lines
from codetasks.data.records import DataError
from codetasks.loading import DEFAULT_DATA_ROOT


def _write_pair(root: Path, split: str, java: str, cs: str) -> Path:
    folder = root / "codexglue-java-cs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.java-cs.txt.java").write_text(java, encoding="utf-8")
    (folder / f"{split}.java-cs.txt.cs").write_text(cs, encoding="utf-8")
    return folder


@pytest.mark.skipif(
    not (DEFAULT_DATA_ROOT / "codexglue-java-cs").is_dir(), reason="shared data not present"
)
def test_offline_splits_have_the_documented_sizes() -> None:
    valid = load_codexglue_java_cs("valid", DEFAULT_DATA_ROOT)
    assert len(valid) == 499
    assert valid[0].uid == "codexglue-java-cs/valid/0"
    assert valid[0].source.startswith("public DVRecord(RecordInputStream in) {")
    assert valid[0].target.startswith("public DVRecord(RecordInputStream in1){")
    assert len(load_codexglue_java_cs("train", DEFAULT_DATA_ROOT)) == 10_295


def test_lines_pair_by_index(tmp_path: Path) -> None:
    _write_pair(tmp_path, "train", "int a() {}\nint b() {}\n", "int A() {}\nint B() {}\n")
    examples = load_codexglue_java_cs("train", tmp_path)
    assert [(e.uid, e.source, e.target) for e in examples] == [
        ("codexglue-java-cs/train/0", "int a() {}", "int A() {}"),
        ("codexglue-java-cs/train/1", "int b() {}", "int B() {}"),
    ]


def test_unicode_line_separators_do_not_break_pairing(tmp_path: Path) -> None:
    path = tmp_path / "x.java"
    path.write_text('String s = "a\u2028b";\nint c;\n', encoding="utf-8")
    assert read_lines(path) == ['String s = "a\u2028b";', "int c;"]


def test_line_count_mismatch_names_both_files_and_counts(tmp_path: Path) -> None:
    folder = _write_pair(tmp_path, "valid", "a\nb\nc\n", "A\nB\n")
    with pytest.raises(DataError) as info:
        load_codexglue_java_cs("valid", tmp_path)
    assert str(info.value) == (
        f"line counts differ: {folder / 'valid.java-cs.txt.java'} has 3 lines, "
        f"{folder / 'valid.java-cs.txt.cs'} has 2"
    )


def test_missing_split_suggests_the_hub(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="google/code_x_glue_cc_code_to_code_trans"):
        load_codexglue_java_cs("test", tmp_path)
    with pytest.raises(ValueError, match="valid: train, valid, test"):
        load_codexglue_java_cs("dev", tmp_path)


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "x.java"
    path.write_bytes(b"int a();\nint \xff b();\n")
    with pytest.raises(DataError, match=rf"^{path}:2: not valid UTF-8 .*byte 0xff at column 5\)$"):
        read_lines(path)
