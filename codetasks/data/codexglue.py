"""CodeXGLUE code-to-code translation, Java→C# (Lu et al. 2021, arXiv 2102.04664).

Offline files are ``<data_root>/codexglue-java-cs/{train,valid}.java-cs.txt.{java,cs}``: one
method per line, line i of ``.java`` pairs with line i of ``.cs``. The hub copy is
``google/code_x_glue_cc_code_to_code_trans`` (fields ``id``, ``java``, ``cs``); uids are
``codexglue-java-cs/<split>/<0-based line>`` for both, so they match.
"""

from __future__ import annotations

from pathlib import Path

from codetasks.data.records import (
    DataError,
    confined,
    decode_line,
    examples_from_records,
    read_data_file,
)
from codetasks.examples import Example

CODEXGLUE_DIR = "codexglue-java-cs"
CODEXGLUE_HUB_ID = "google/code_x_glue_cc_code_to_code_trans"
SPLITS = ("train", "valid", "test")


def read_lines(path: Path, hint: str = "") -> list[str]:
    """The lines of ``path``, split on ``\\n`` only.

    ``str.splitlines`` would also split on U+2028 and form feeds inside code, which shifts the
    Java/C# pairing. A missing or unreadable file or invalid UTF-8 is a :class:`DataError`
    naming the file (and line).
    """
    lines = read_data_file(path, hint).split(b"\n")  # UTF-8 never holds 0x0A inside a character
    if lines and lines[-1] == b"":
        lines.pop()
    return [decode_line(line, path, number).rstrip("\r") for number, line in
            enumerate(lines, start=1)]  # fmt: skip


def pair_files(java_path: Path, cs_path: Path) -> list[dict[str, str]]:
    """``{"java", "cs"}`` records from two parallel line files; their line counts must match."""
    hint = f"; load this split from the hub with source={CODEXGLUE_HUB_ID!r}"
    java, cs = read_lines(java_path, hint), read_lines(cs_path, hint)
    if len(java) != len(cs):
        raise DataError(
            f"line counts differ: {java_path} has {len(java)} lines, {cs_path} has {len(cs)}"
        )
    return [{"java": j, "cs": c} for j, c in zip(java, cs, strict=True)]


def load_codexglue_java_cs(split: str, root: Path) -> list[Example]:
    """CodeXGLUE Java→C# ``split`` (train/valid/test) from ``<root>/codexglue-java-cs``."""
    if split not in SPLITS:
        raise ValueError(f"unknown CodeXGLUE split {split!r}; valid: {', '.join(SPLITS)}")
    folder = root / CODEXGLUE_DIR
    java_path, cs_path = (
        confined(folder / f"{split}.java-cs.txt{ext}", folder) for ext in (".java", ".cs")
    )
    records = pair_files(java_path, cs_path)
    return examples_from_records(
        "translation", records, prefix=f"{CODEXGLUE_DIR}/{split}", origin=str(java_path)
    )
