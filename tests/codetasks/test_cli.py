"""``python -m codetasks``: bad data or arguments end in one line on stderr and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from codetasks.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def _data_root(tmp_path: Path, mbpp_train: bytes) -> Path:
    (tmp_path / "mbpp-sanitized").mkdir()
    (tmp_path / "mbpp-sanitized" / "train.jsonl").write_bytes(mbpp_train)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "generation"], "train.jsonl:2: malformed JSON: nested too deeply"),
        (["--tasks", "translation"], "train.java-cs.txt.java does not exist; load this split"),
        (["--tasks", "generation", "--clients", "0"], "num_clients must be at least 1, got 0"),
        (["--tasks", "generation", "--clients", "9"], "cannot give 9 clients an example each"),
        (["--tasks", "generation", "--limit-per-task", "0"], "limit must be a positive integer"),
        (["--tasks", "generation", "--scheme", "dirichlet", "--alpha", "-1"], "alpha must be"),
    ],
)
def test_partition_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    row = b'{"text": "t", "code": "def f(): pass", "test_list": ["assert f() is None"]}'
    deep = b"[" * 100_000 if "nested" in message else row
    root = _data_root(tmp_path, row + b"\n" + deep + b"\n")
    argv = ["partition", "--clients", "2", "--data-root", str(root), *argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert (out, err.count("\n")) == ("", 1)
    assert err.startswith("error: ") and message in err


def test_mine_summaries_of_a_missing_directory(tmp_path: Path, capsys) -> None:
    assert main(["mine-summaries", "--source-dir", str(tmp_path / "nope")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: summarization source {tmp_path / 'nope'} is not a directory\n"
    )


def test_the_module_prints_no_traceback(tmp_path: Path) -> None:
    root = _data_root(tmp_path, b"{oops\n")
    argv = ["partition", "--clients", "1", "--tasks", "generation", "--data-root", str(root)]
    done = subprocess.run([sys.executable, "-m", "codetasks", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr == f"error: {root / 'mbpp-sanitized' / 'train.jsonl'}:1: malformed JSON: "
        "Expecting property name enclosed in double quotes\n"
    )
