"""Users' own data as JSON Lines, one record per line, for any of the three tasks.

Accepted fields follow the public datasets: generation as MBPP (``text`` or ``prompt``,
``code``, ``test_list``; optional ``test_setup_code``, ``task_id``) or HumanEval; translation
as CodeXGLUE (``java``, ``cs``) or generic ``source``/``target``; summarization as CodeXGLUE
code-to-text (``code``, ``docstring``) or ``source``/``target``. An optional ``uid`` string is
kept verbatim. Every error names the file and the 1-based line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codetasks.data.records import DataError, decode_line, examples_from_numbered
from codetasks.examples import Example

__all__ = ["DataError", "load_jsonl", "read_jsonl"]


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of ``path``; invalid UTF-8 or
    JSON is a :class:`DataError` naming the file and line."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    rows = []
    with path.open("rb") as raw_lines:  # decoded line by line, so errors can name the line
        for number, raw in enumerate(raw_lines, start=1):
            line = decode_line(raw, path, number)
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: malformed JSON: {error.msg}") from error
    return rows


def load_jsonl(task: str, path: Path) -> list[Example]:
    """The examples of ``task`` in ``path``; uids default to ``<file stem>/<record index>``."""
    return examples_from_numbered(task, read_jsonl(path), prefix=path.stem, origin=str(path))
