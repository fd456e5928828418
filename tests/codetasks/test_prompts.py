"""Exact tests of the chat prompts, training targets and answer parsing."""

from __future__ import annotations

import pytest

from codetasks.examples import Example
from codetasks.prompts import (
    SYSTEM_PROMPTS,
    first_sentence,
    parse_answer,
    to_messages,
    to_response,
)

MBPP = Example(
    task="generation",
    uid="mbpp/602",
    source="Write a function to add two numbers.",
    target="def add(a, b):\n    return a + b",
    tests=("assert add(1, 2) == 3", "assert add(0, 0) == 0"),
)
HUMANEVAL = Example(
    task="generation",
    uid="humaneval/0",
    source='def add(a, b):\n    """Add a and b."""\n',
    target="    return a + b\n",
    tests=("def check(candidate):\n    assert candidate(1, 2) == 3\n",),
    entry_point="add",
    meta={"format": "completion"},
)
JAVA = Example(
    task="translation",
    uid="codexglue-java-cs/valid/0",
    source="public int f() { return 1; }",
    target="public int f() { return 1; }",
)
SUMMARY = Example(
    task="summarization",
    uid="summarization/os.py:f",
    source="def f(x):\n    return x + 1",
    target="Return x plus one.",
)


def test_system_prompts_cover_every_task() -> None:
    assert set(SYSTEM_PROMPTS) == {"generation", "translation", "summarization"}


def test_mbpp_messages_list_the_tests() -> None:
    messages = to_messages(MBPP)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPTS["generation"]
    assert messages[1]["content"] == (
        "Write a function to add two numbers.\n"
        "Your code should pass these tests:\n\n"
        "assert add(1, 2) == 3\nassert add(0, 0) == 0"
    )


def test_humaneval_messages_ask_to_complete_the_signature() -> None:
    assert to_messages(HUMANEVAL)[1]["content"] == (
        "Complete the following Python function:\n"
        '```python\ndef add(a, b):\n    """Add a and b."""\n```'
    )


def test_translation_and_summarization_messages() -> None:
    assert to_messages(JAVA)[1]["content"] == (
        "Translate this Java method to C#:\n```java\npublic int f() { return 1; }\n```"
    )
    assert to_messages(SUMMARY)[1]["content"] == (
        "Summarize what this Python function does in one sentence:\n"
        "```python\ndef f(x):\n    return x + 1\n```"
    )


def test_responses() -> None:
    assert to_response(MBPP) == "```python\ndef add(a, b):\n    return a + b\n```"
    assert to_response(JAVA) == "```csharp\npublic int f() { return 1; }\n```"
    assert to_response(SUMMARY) == "Return x plus one."


@pytest.mark.parametrize("example", [MBPP, JAVA])
def test_parse_answer_inverts_to_response(example: Example) -> None:
    assert parse_answer(example.task, to_response(example)) == example.target


def test_parse_answer_takes_the_first_fenced_block_of_any_language() -> None:
    reply = "Here:\n```py\nx = 1\n```\nor\n```python\nx = 2\n```"
    assert parse_answer("generation", reply) == "x = 1"
    assert parse_answer("translation", "```\nint x = 1;\n```") == "int x = 1;"


def test_parse_answer_keeps_indentation_and_reads_unclosed_fences() -> None:
    assert parse_answer("generation", "```python\n    return 1\n") == "    return 1"


def test_parse_answer_without_fence_returns_whole_text() -> None:
    assert parse_answer("generation", "  def f(): pass \n") == "def f(): pass"


def test_parse_answer_summary_first_sentence_unquoted() -> None:
    reply = '"Returns the sum of a and b, e.g. 3 for 1 and 2. It is fast."\nMore text.'
    assert parse_answer("summarization", reply) == "Returns the sum of a and b, e.g. 3 for 1 and 2."
    assert parse_answer("summarization", "\n\n  `Sorts a list`  \n") == "Sorts a list"
    assert parse_answer("summarization", "") == ""


def test_parse_answer_rejects_unknown_task() -> None:
    with pytest.raises(ValueError, match="generation, translation, summarization"):
        parse_answer("chat", "x")


def test_first_sentence_uses_first_paragraph_and_normalises_space() -> None:
    assert first_sentence("Open a  file\n   for reading.  Then more.") == "Open a file for reading."
    assert first_sentence("Summary line\n\nDetails. More.") == "Summary line"
    assert first_sentence("Version 3.11 is used. Next.") == "Version 3.11 is used."
