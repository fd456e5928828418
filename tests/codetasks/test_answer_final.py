"""A reply whose answer is final parses to the same answer whatever follows it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codetasks.prompts import answer_is_final, parse_answer

# Characters that make or break fences, lines and sentences.
TEXT = st.text(alphabet="`\n\r ab.py\"'!\x0b", max_size=40)


@pytest.mark.parametrize("task", ["generation", "translation", "summarization"])
@given(text=TEXT, more=TEXT)
def test_a_final_answer_does_not_change(task, text, more):
    if answer_is_final(task, text):
        assert parse_answer(task, text + more) == parse_answer(task, text)


@pytest.mark.parametrize(
    ("task", "text", "final"),
    [
        ("generation", "```python\ndef f():\n    return 1\n```", True),
        ("generation", "```python\ndef f():\n    return 1\n``", False),
        ("generation", "def f():\n    return 1\n", False),  # no fence: the whole reply counts
        ("translation", "Here:\n```csharp\nint x;\n```\nThis declares", True),
        ("summarization", "Return the sum.", False),  # the line may go on
        ("summarization", "\n  \nReturn the sum.\nMore", True),
        ("summarization", "  \n", False),
    ],
)
def test_answer_is_final_examples(task, text, final):
    assert answer_is_final(task, text) is final
