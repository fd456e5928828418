"""One entry point, :func:`load_task`, that loads any task's split from the offline data, a
user's JSONL file, a directory of Python sources, HumanEval, or a Hugging Face Hub dataset.

Offline defaults follow the multi-task code study (arXiv 2601.15094) with the data we can ship:
MBPP-sanitized for generation, CodeXGLUE Java→C# for translation, and (function, docstring)
pairs mined from the standard library for summarization.
"""

from __future__ import annotations

from pathlib import Path

from codetasks.data.codexglue import load_codexglue_java_cs
from codetasks.data.hub import load_hub
from codetasks.data.humaneval import load_humaneval
from codetasks.data.jsonl import load_jsonl
from codetasks.data.mbpp import load_mbpp
from codetasks.data.summarization import load_summarization
from codetasks.examples import TASK_NAMES, Example

SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")
HUMANEVAL_SOURCE = "humaneval"
# The repository's sibling ``shared/data`` folder (see shared/data/README.md).
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _check_names(task: str, split: str) -> None:
    if task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASK_NAMES)}")
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_NAMES)}")


def load_offline(task: str, split: str, data_root: Path) -> list[Example]:
    """The default source of each task: MBPP, CodeXGLUE Java→C#, or the mined stdlib."""
    if task == "generation":
        return load_mbpp(split, data_root)
    if task == "translation":
        return load_codexglue_java_cs(split, data_root)
    return load_summarization(split)


def _load_humaneval(task: str, split: str) -> list[Example]:
    if (task, split) != ("generation", "test"):
        raise ValueError(
            f"HumanEval is an evaluation set for generation: use task='generation', "
            f"split='test' (got task={task!r}, split={split!r})"
        )
    return load_humaneval()


def _load_directory(task: str, split: str, directory: Path) -> list[Example]:
    if task != "summarization":
        raise ValueError(
            f"a directory source ({directory}) is mined for summarization only, not {task!r}"
        )
    return load_summarization(split, directory)


def load_source(task: str, split: str, data_root: Path, source: str) -> list[Example]:
    """Dispatch on ``source``: ``""`` offline, ``"humaneval"``, ``*.jsonl`` (``{split}`` in the
    path is replaced by the split name), an existing directory, else a hub dataset ID."""
    if not source:
        return load_offline(task, split, data_root)
    if source.lower() == HUMANEVAL_SOURCE:
        return _load_humaneval(task, split)
    if source.endswith(".jsonl"):
        return load_jsonl(task, Path(source.replace("{split}", split)))
    if Path(source).is_dir():
        return _load_directory(task, split, Path(source))
    return load_hub(task, source, split)


def load_task(
    task: str,
    split: str,
    *,
    data_root: Path = DEFAULT_DATA_ROOT,
    source: str = "",
    limit: int | None = None,
) -> list[Example]:
    """The examples of ``task`` ("generation", "translation", "summarization") for ``split``
    ("train", "valid", "test"), in the source's order, the first ``limit`` if given.

    ``source``: ``""`` → offline data under ``data_root``; ``"humaneval"`` → the bundled
    HumanEval (generation/test); a path ending ``.jsonl`` → the user's file; an existing
    directory → Python sources mined for summarization; anything else → a hub dataset ID
    (``"id"`` or ``"id:config"``) loaded with ``datasets.load_dataset``.
    """
    _check_names(task, split)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit}")
    examples = load_source(task, split, data_root, source)
    return examples if limit is None else examples[:limit]
