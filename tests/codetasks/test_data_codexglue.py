"""CodeXGLUE Java→C# loading from parallel line files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_a_byte_order_mark_is_not_part_of_the_first_method(tmp_path: Path) -> None:
    _write_pair(tmp_path, "valid", "\ufeffint a();\n", "\ufeffint A();\r\n")
    (example,) = load_codexglue_java_cs("valid", tmp_path)
    assert (example.source, example.target) == ("int a();", "int A();")


def test_a_blank_line_is_an_empty_pair_named_by_line(tmp_path: Path) -> None:
    folder = _write_pair(tmp_path, "valid", "int a();\nint b();\n", "int A();\n \n")
    with pytest.raises(DataError) as info:
        load_codexglue_java_cs("valid", tmp_path)
    assert str(info.value) == f"{folder / 'valid.java-cs.txt.java'}:2: empty target"


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside.java"])
def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path, target: str) -> None:
    folder = _write_pair(tmp_path / "root", "valid", "int a();\n", "int A();\n")
    (tmp_path / "root" / "outside.java").write_text("int secret();\n")
    link = folder / "valid.java-cs.txt.java"
    link.unlink()
    link.symlink_to(target)
    with pytest.raises(DataError, match=rf"^{link} links to .*, outside the dataset folder"):
        load_codexglue_java_cs("valid", tmp_path / "root")


def test_a_symlinked_dataset_folder_and_links_inside_it_are_fine(tmp_path: Path) -> None:
    real = _write_pair(tmp_path / "elsewhere", "train", "int a();\n", "int A();\n")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "codexglue-java-cs").symlink_to(real)
    (real / "valid.java-cs.txt.java").symlink_to("train.java-cs.txt.java")
    (real / "valid.java-cs.txt.cs").symlink_to(real / "train.java-cs.txt.cs")
    assert [e.source for e in load_codexglue_java_cs("valid", tmp_path / "root")] == ["int a();"]


def test_a_directory_in_place_of_a_file_is_a_data_error(tmp_path: Path) -> None:
    folder = _write_pair(tmp_path, "valid", "int a();\n", "int A();\n")
    (folder / "valid.java-cs.txt.cs").unlink()
    (folder / "valid.java-cs.txt.cs").mkdir()
    with pytest.raises(DataError, match=r"valid\.java-cs\.txt\.cs is not a regular file; load"):
        load_codexglue_java_cs("valid", tmp_path)


_LINE_PIECES = [b"int a();", b" ", b"\r", b"\x00", b"\xef\xbb\xbf", b"\xff", b"\xe2\x80\xa8",
                b"\x0c", b"\n", b"\n\n", b"{", b"x" * 10_000]  # fmt: skip
_TEXT = st.lists(st.sampled_from(_LINE_PIECES), max_size=10).map(b"".join)


@given(java=_TEXT, cs=_TEXT)
def test_any_pair_of_files_loads_or_is_a_data_error(java: bytes, cs: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "codexglue-java-cs"
        folder.mkdir()
        (folder / "train.java-cs.txt.java").write_bytes(java)
        (folder / "train.java-cs.txt.cs").write_bytes(cs)
        try:
            examples = load_codexglue_java_cs("train", Path(root))
        except DataError as error:
            assert "\n" not in str(error) and str(folder) in str(error)
        else:
            assert all(e.source and e.target for e in examples)
