"""The one record type every code task produces: an :class:`Example`.

Loaders (``codetasks.data``) turn real datasets into examples; prompts
(``codetasks.prompts``) turn examples into chat messages; metrics score
predictions against ``Example.target`` (and ``Example.tests`` for generation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runconfig.schema import TASK_NAMES  # the lowest layer owns the names (issue 15)


@dataclass(frozen=True)
class Example:
    """One supervised pair of a code task.

    ``source`` is the model input (an NL problem, Java code, or Python code) and
    ``target`` the reference output (Python code, C# code, or a one-sentence
    summary). ``uid`` is stable across runs, e.g. ``"mbpp/602"``.
    Generation examples also carry executable ``tests`` (assert statements),
    an optional ``test_setup`` and, for HumanEval, the ``entry_point``.
    """

    task: str
    uid: str
    source: str
    target: str
    tests: tuple[str, ...] = ()
    test_setup: str = ""
    entry_point: str = ""
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ValueError(
                f"Example {self.uid!r}: unknown task {self.task!r}; valid: {TASK_NAMES}"
            )


def example_problem(example: Example) -> str | None:
    """Why ``example`` cannot be scored, or None: a generation example without tests, or a
    text that is not encodable Unicode (a lone surrogate, which JSON's ``\\ud800`` allows
    but no tokenizer, file or process can take)."""
    if example.task == "generation" and not example.tests:
        return f"{example.uid}: no tests to execute"
    fields = {"source": example.source, "target": example.target,
              "test_setup": example.test_setup,
              **{f"test {n}": test for n, test in enumerate(example.tests, start=1)}}  # fmt: skip
    for name, text in fields.items():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            char = f"U+{ord(text[error.start]):04X}"
            return (
                f"{example.uid}: {name} holds a lone surrogate ({char}) at character {error.start}"
            )
    return None
