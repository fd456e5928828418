"""Turn dataset records (dicts from JSONL files, the hub, or bundled files) into
:class:`~codetasks.examples.Example` objects, checking every field.

One converter per task accepts the field names of the public dataset it follows — MBPP
(``google-research-datasets/mbpp``: ``text``/``prompt``, ``code``, ``test_list``), HumanEval
(``openai/openai_humaneval``), CodeXGLUE Java→C# (``java``, ``cs``), CodeXGLUE code-to-text
(``code``, ``docstring``) — plus generic ``source``/``target`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from codetasks.data.pyfunctions import guess_entry_point, strip_docstring
from codetasks.examples import TASK_NAMES, Example
from codetasks.prompts import COMPLETION_FORMAT, first_sentence

Record = Mapping[str, Any]


class DataError(ValueError):
    """A dataset record or file is missing, malformed, or empty; the message says where."""


def decode_line(raw: bytes, path: object, number: int) -> str:
    """Line ``number`` (1-based) of ``path`` as text; invalid UTF-8 is a :class:`DataError`
    that names the file, the line and the byte column.

    A byte order mark opening line 1 is dropped: editors on Windows write one, and kept it
    would become an invisible first character of the first record.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = raw[error.start : error.start + 1].hex()
        raise DataError(
            f"{path}:{number}: not valid UTF-8 ({error.reason}: byte 0x{byte} "
            f"at column {error.start + 1})"
        ) from None
    return text.removeprefix("\ufeff") if number == 1 else text


def read_data_file(path: Path, hint: str = "") -> bytes:
    """The bytes of ``path``; a missing path, a directory or an unreadable file is a
    :class:`DataError` that names it (``hint`` is appended, e.g. where else to load from)."""
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise DataError(f"{path} {what}{hint}")
    try:
        return path.read_bytes()
    except OSError as error:  # unreadable (permissions), or an I/O error while reading
        raise DataError(f"{path}: cannot read ({error.strerror or error}){hint}") from None


def confined(path: Path, directory: Path) -> Path:
    """``path``, which must resolve inside ``directory``: a symlink out of a dataset folder
    would feed an arbitrary host file (``/etc/passwd``, a key) into training as data."""
    target, folder = path.resolve(), directory.resolve()
    if not target.is_relative_to(folder):
        raise DataError(
            f"{path} links to {target}, outside the dataset folder {folder}; "
            "copy the file into the folder instead"
        )
    return path


def _type_name(value: object) -> str:
    return type(value).__name__


def require_str(record: Record, names: tuple[str, ...], where: str) -> str:
    """The first of ``names`` present in ``record``, which must be a string."""
    for name in names:
        if name in record and record[name] is not None:
            value = record[name]
            if not isinstance(value, str):
                raise DataError(
                    f"{where}: field {name!r} must be a string, got {_type_name(value)}"
                )
            return value
    alternatives = " or ".join(repr(n) for n in names)
    raise DataError(f"{where}: missing field {alternatives}")


def require_str_list(record: Record, name: str, where: str) -> tuple[str, ...]:
    """``record[name]``, which must be a list of strings."""
    if name not in record:
        raise DataError(f"{where}: missing field {name!r}")
    value = record[name]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        got = _type_name(value)
        if isinstance(value, list | tuple):
            got = "list containing " + ", ".join(sorted({_type_name(v) for v in value}))
        raise DataError(f"{where}: field {name!r} must be a list of strings, got {got}")
    return tuple(value)


def record_uid(record: Record, prefix: str, index: int, where: str = "record") -> str:
    """A stable uid: ``record['uid']`` verbatim, else ``prefix/<task_id or id or index>``.

    HumanEval's ``"HumanEval/7"`` keeps only the number, giving ``"humaneval/7"``.
    """
    if record.get("uid") is not None:
        return require_str(record, ("uid",), where)
    for key in ("task_id", "id"):
        if key in record and record[key] is not None:
            return f"{prefix}/{str(record[key]).rsplit('/', 1)[-1]}"
    return f"{prefix}/{index}"


def generation_example(record: Record, where: str, uid: str) -> Example:
    """MBPP (``text``/``prompt``, ``code``, ``test_list``) or HumanEval (``prompt``,
    ``canonical_solution``, ``test``, ``entry_point``) record → generation example."""
    if "canonical_solution" in record:
        entry_point = require_str(record, ("entry_point",), where)
        return Example(
            task="generation",
            uid=uid,
            source=require_str(record, ("prompt",), where),
            target=require_str(record, ("canonical_solution",), where),
            tests=(require_str(record, ("test",), where),),
            entry_point=entry_point,
            meta={"format": COMPLETION_FORMAT},
        )
    code = require_str(record, ("code",), where)
    tests = require_str_list(record, "test_list", where)
    # null, like an absent field, means no setup (as everywhere in require_str)
    has_setup = record.get("test_setup_code") is not None
    setup = require_str(record, ("test_setup_code",), where) if has_setup else ""
    meta = {"entry_point": guess_entry_point(code, tests)}
    if "task_id" in record:
        meta["task_id"] = str(record["task_id"])
    return Example(
        task="generation",
        uid=uid,
        source=require_str(record, ("text", "prompt"), where),
        target=code,
        tests=tests,
        test_setup=setup,
        meta=meta,
    )


def translation_example(record: Record, where: str, uid: str) -> Example:
    """CodeXGLUE (``java``, ``cs``) or generic (``source``, ``target``) record → translation."""
    if "java" in record:
        source, target = (require_str(record, (k,), where) for k in ("java", "cs"))
    elif "source" in record:
        source, target = (require_str(record, (k,), where) for k in ("source", "target"))
    else:
        raise DataError(f"{where}: missing field 'java' (or 'source' with 'target')")
    source, target = source.strip(), target.strip()
    # A blank line in a parallel file gives an empty pair: nothing to translate, or a
    # reference that teaches the model to answer with nothing.
    for name, text in (("source", source), ("target", target)):
        if not text:
            raise DataError(f"{where}: empty {name}")
    return Example(task="translation", uid=uid, source=source, target=target)


def summarization_example(record: Record, where: str, uid: str) -> Example:
    """CodeXGLUE code-to-text (``code``, ``docstring``) or generic (``source``, ``target``)
    record → summarization example.

    With ``code``/``docstring`` the docstring is removed from the code (CodeXGLUE keeps it
    inside ``code``) and the target is the docstring's first sentence, as in our stdlib mining;
    ``source``/``target`` pairs are used verbatim.
    """
    if "code" in record:
        code = strip_docstring(require_str(record, ("code",), where))
        summary = first_sentence(require_str(record, ("docstring",), where))
    elif "source" in record:
        code = require_str(record, ("source",), where)
        summary = require_str(record, ("target",), where).strip()
    else:
        raise DataError(f"{where}: missing field 'code' (or 'source' with 'target')")
    if not summary:
        raise DataError(f"{where}: empty summary")
    return Example(task="summarization", uid=uid, source=code, target=summary)


Converter = Callable[[Record, str, str], Example]
CONVERTERS: dict[str, Converter] = {
    "generation": generation_example,
    "translation": translation_example,
    "summarization": summarization_example,
}


def examples_from_numbered(
    task: str, numbered: Iterable[tuple[int, Record]], *, prefix: str, origin: str
) -> list[Example]:
    """Convert ``(position, record)`` pairs in order; errors name ``origin:<position>``.

    Uids without an id field use the 0-based record index (CodeXGLUE's own numbering).
    """
    if task not in CONVERTERS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASK_NAMES)}")
    convert = CONVERTERS[task]
    examples, first_seen = [], {}
    for index, (position, record) in enumerate(numbered):
        where = f"{origin}:{position}"
        if not isinstance(record, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {_type_name(record)}")
        example = convert(record, where, record_uid(record, prefix, index, where))
        # The partition and the held-out split tell examples apart by uid: a repeated one
        # would silently drop an example, or hide a test example as already held.
        if example.uid in first_seen:
            raise DataError(
                f"{where}: uid {example.uid!r} repeats {first_seen[example.uid]}; "
                "each needs its own"
            )
        first_seen[example.uid] = where
        examples.append(example)
    if not examples:
        raise DataError(f"no examples in {origin}")
    return examples


def examples_from_records(
    task: str, records: Iterable[Record], *, prefix: str, origin: str
) -> list[Example]:
    """Convert ``records`` in order; errors name ``origin:<1-based record number>``."""
    return examples_from_numbered(task, enumerate(records, start=1), prefix=prefix, origin=origin)
