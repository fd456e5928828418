"""Chat prompts for the three code tasks, and parsing of the model's answers.

The prompt wording follows the conventions of each task's benchmark: MBPP's few-shot prompt
("Your code should pass these tests:", Austin et al. 2021, arXiv 2108.07732), HumanEval's
complete-this-function prompt (Chen et al. 2021, arXiv 2107.03374), and the instruction formats
of the multi-task QLoRA study (arXiv 2601.15094) for CodeXGLUE Java→C# translation and Python
summarization. Messages are plain ``{"role", "content"}`` dicts; the caller applies the
tokenizer's ``apply_chat_template``.
"""

from __future__ import annotations

import re

from codetasks.examples import TASK_NAMES, Example

SYSTEM_PROMPTS: dict[str, str] = {
    "generation": (
        "You are an expert Python programmer. Answer with one complete, self-contained Python "
        "code block."
    ),
    "translation": (
        "You are an expert Java and C# programmer. Answer with one C# code block that behaves "
        "exactly like the given Java code."
    ),
    "summarization": (
        "You are an expert Python programmer. Answer with one plain English sentence that says "
        "what the given function does."
    ),
}

# Set by the HumanEval loader: the source is a signature + docstring to complete, not NL text.
COMPLETION_FORMAT = "completion"

RESPONSE_FENCES: dict[str, str] = {"generation": "python", "translation": "csharp"}

_FENCED_BLOCK = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
# A sentence ends at a period (or ?/!) followed by whitespace or the end of the text.
_SENTENCE_END = re.compile(r"[.?!](?=\s|$)")
# Abbreviations whose period does not end a sentence ("e.g. a list" is one sentence).
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.")
_QUOTES = "\"'`"


def _check_task(task: str) -> None:
    if task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASK_NAMES)}")


def user_prompt(example: Example) -> str:
    """The user turn for ``example``: the task instruction followed by its input."""
    if example.task == "generation":
        if example.meta.get("format") == COMPLETION_FORMAT:
            return (
                "Complete the following Python function:\n"
                f"```python\n{example.source.rstrip()}\n```"
            )
        tests = "\n".join(example.tests)
        return f"{example.source.strip()}\nYour code should pass these tests:\n\n{tests}"
    if example.task == "translation":
        return f"Translate this Java method to C#:\n```java\n{example.source.strip()}\n```"
    return (
        "Summarize what this Python function does in one sentence:\n"
        f"```python\n{example.source.rstrip()}\n```"
    )


def to_messages(example: Example) -> list[dict[str, str]]:
    """System and user messages for ``example``, ready for ``apply_chat_template``."""
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[example.task]},
        {"role": "user", "content": user_prompt(example)},
    ]


def to_response(example: Example) -> str:
    """The assistant training target: a fenced code block, or the summary sentence."""
    fence = RESPONSE_FENCES.get(example.task)
    if fence is None:
        return example.target.strip()
    return f"```{fence}\n{example.target.strip(chr(10))}\n```"


def first_sentence(text: str) -> str:
    """The first sentence of the first non-empty paragraph, whitespace-normalised.

    A sentence ends at ``.``/``?``/``!`` followed by whitespace or the end; common
    abbreviations (e.g., i.e.) do not end it. The terminal punctuation is kept.
    """
    paragraph = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    flat = " ".join(paragraph.split())
    for match in _SENTENCE_END.finditer(flat):
        end = match.end()
        if not flat[:end].lower().endswith(_ABBREVIATIONS):
            return flat[:end]
    return flat


def _strip_quotes(text: str) -> str:
    """Drop enclosing quote pairs, and an opening quote whose closing one was cut off."""
    text = text.strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] == text[0]:
        text = text[1:-1].strip()
    if text[:1] in tuple(_QUOTES) and text.count(text[0]) % 2 == 1:
        text = text[1:].strip()
    return text


def parse_answer(task: str, text: str) -> str:
    """Extract the answer from a model's raw reply.

    generation/translation: the first fenced code block whatever its language tag (an unclosed
    fence, from a reply cut at the token limit, runs to the end); with no fence, the whole reply
    stripped. summarization: the first sentence of the first non-empty line, without quotes.
    """
    _check_task(task)
    if task != "summarization":
        match = _FENCED_BLOCK.search(text)
        return match.group(1).strip("\n").rstrip() if match else text.strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return _strip_quotes(first_sentence(_strip_quotes(lines[0])))


def answer_is_final(task: str, text: str) -> bool:
    """Whether no continuation of ``text`` can change :func:`parse_answer` of it.

    generation/translation: the first fenced code block is closed. summarization: the first
    non-empty line has ended. Generation stops a reply here (a stop string), so one rambling
    reply does not hold its whole batch.
    """
    _check_task(task)
    if task != "summarization":
        match = _FENCED_BLOCK.search(text)
        return match is not None and match.group(0).endswith("```")
    for line in text.splitlines(keepends=True):
        if line.strip():
            return line.splitlines()[0] != line  # it ends with a line break
    return False
