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

from codetasks.data.records import DataError, decode_line, examples_from_numbered, read_data_file
from codetasks.examples import Example

__all__ = ["DataError", "load_jsonl", "read_json_object", "read_jsonl"]


def parse_json_line(line: str, path: Path, number: int) -> Any:
    """Line ``number`` of ``path`` parsed as JSON; anything ``json`` rejects is a
    :class:`DataError` naming the file and line.

    Beyond syntax errors, ``json`` raises ``ValueError`` for an integer of more than 4,300
    digits and ``RecursionError`` for deep nesting (``[[[[…``): hostile lines, not bugs.
    """
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        reason = error.msg
    except ValueError as error:
        reason = str(error).split(":", 1)[0]  # drop the advice to raise the interpreter's limit
    except RecursionError:
        reason = "nested too deeply"
    raise DataError(f"{path}:{number}: malformed JSON: {reason}")


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object that is the whole of ``path`` (a run's config, an adapter's config, a
    results file). Not UTF-8, not JSON (``[[[[…`` and 4,300-digit integers included) or
    another JSON value is a :class:`DataError` naming the file; OSError passes through."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{path}: not readable JSON ({type(error).__name__})") from None
    if not isinstance(found, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(found).__name__}")
    return found


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of ``path``; a missing or
    unreadable file, invalid UTF-8 or JSON is a :class:`DataError` naming the file and line."""
    rows = []
    # Split on b"\n" only, as a binary file iterates, and decoded line by line so that errors
    # can name the line.
    for number, raw in enumerate(read_data_file(path).split(b"\n"), start=1):
        line = decode_line(raw, path, number)
        if line.strip():
            rows.append((number, parse_json_line(line, path, number)))
    return rows


def load_jsonl(task: str, path: Path) -> list[Example]:
    """The examples of ``task`` in ``path``; uids default to ``<file stem>/<record index>``."""
    return examples_from_numbered(task, read_jsonl(path), prefix=path.stem, origin=str(path))
