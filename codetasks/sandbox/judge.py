"""Turn what a sandboxed run reported into its verdict, in the parent process.

The channel's records are untrusted: the program can write lines of its own. A record per
split test, exactly one, must decode to plain data (the tags written by
:func:`codetasks.sandbox.harness.encode`) that satisfies the test; duplicates or records that
do not decode mean the channel was tampered with. The in-sandbox path (tests that could not be
split) still rests on the process exiting 0 after the harness's ``done`` record, as in the
HumanEval harness, and is counted so reports show how much of a score rests on it.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from codetasks.sandbox.runner import RawRun
from codetasks.sandbox.verdict import SplitTest, TestPlan

SKIPPED = "skipped"  # an example that cannot be scored (no tests, unencodable text)
STATUSES: tuple[str, ...] = ("passed", "failed", "timeout", "error", SKIPPED)
SPAWN_FAILED = "sandbox: could not start the program (process cap reached)"
EARLY_EXIT = "sandbox: the program exited before its tests finished"
TAMPERED = "sandbox: the results channel was tampered with"
_DETAIL_LINES, _DETAIL_CHARS = 20, 2000
_SCALARS = {"int": lambda v: int(v, 16), "float": float.fromhex, "bytes": bytes.fromhex}
_SEQUENCES = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run; ``detail`` says why it did not pass (stderr's tail)."""

    status: str
    passed: bool
    seconds: float
    detail: str
    mode: str = ""
    split_tests: int = 0  # tests judged outside the sandbox
    in_sandbox_tests: int = 0  # asserts that had to run inside it


class Tampered(ValueError):
    """A channel record that the harness cannot have written."""


def decode(data: Any) -> Any:
    """The plain value of a tagged record (inverse of the harness's ``encode``)."""
    if data is None or isinstance(data, bool | str):
        return data
    if not isinstance(data, dict) or len(data) != 1:
        raise Tampered(f"not an encoded value: {_short(data)[:80]}")
    (tag, body), = data.items()  # fmt: skip
    try:
        if tag in _SCALARS:
            return _SCALARS[tag](body)
        if tag == "complex":
            return complex(float.fromhex(body[0]), float.fromhex(body[1]))
        if tag in _SEQUENCES:
            return _SEQUENCES[tag](decode(item) for item in body)
        if tag == "dict":
            return {decode(key): decode(value) for key, value in body}
    # Any JSON may stand in a body: a dict where a list belongs (KeyError), an exponent past
    # float range (OverflowError), nesting deeper than the stack.
    except (TypeError, ValueError, LookupError, OverflowError, RecursionError) as error:
        raise Tampered(f"bad {tag!r} value") from error
    raise Tampered(f"unknown tag {tag!r}")


def judge(plan: TestPlan, run: RawRun) -> SandboxResult:
    """The verdict of ``run``: the first split test that does not hold decides, else how
    the process ended."""
    status, reason = _verdict(plan, run)
    lines = run.stderr.strip().splitlines()[-_DETAIL_LINES:] if status != "passed" else []
    detail = "\n".join([*lines, reason] if reason else lines)
    # Messages are the program's text, lone surrogates included (ValueError("\ud800")), and
    # reports are written as UTF-8: escape them here.
    detail = detail.encode("utf-8", "backslashreplace").decode("utf-8")[-_DETAIL_CHARS:]
    return SandboxResult(status, status == "passed", run.seconds, detail, run.mode,
                         plan.split_tests, plan.in_sandbox_tests)  # fmt: skip


def _verdict(plan: TestPlan, run: RawRun) -> tuple[str, str]:
    if run.returncode is None:
        return "error", SPAWN_FAILED
    try:
        outputs, done = _outputs(run.records, len(plan.split))
    except Tampered as error:
        return "error", f"{TAMPERED}: {error}"
    for index, test in enumerate(plan.split):
        if index not in outputs:
            return _ending(run, done=False)
        problem = _problem(index, test, outputs[index])
        if problem is not None:
            return problem
    return _ending(run, done)


def _outputs(records: Sequence[Any], count: int) -> tuple[dict[int, dict], bool]:
    outputs, done = {}, False
    for record in records:
        if record == {"done": True}:
            done = True
        elif isinstance(record, dict) and isinstance(record.get("i"), int):
            index = record["i"]
            if index in outputs or not 0 <= index < count:
                raise Tampered(f"unexpected record for test {index}")
            outputs[index] = record
    return outputs, done


def _problem(index: int, test: SplitTest, record: dict) -> tuple[str, str] | None:
    where = f"test {index + 1} ({test.call})"
    if "raised" in record:
        return "error", f"{where} raised {_text(record['raised'], 500)}"
    if "not_plain" in record:
        return "failed", f"AssertionError: {where} {_text(record['not_plain'], 200)}"
    if "value" not in record:
        return "error", f"{TAMPERED}: record without a value"
    try:
        value = decode(record["value"])
    except Tampered as error:
        return "error", f"{TAMPERED}: {error}"
    if test.holds(value):
        return None
    return (
        "failed",
        f"AssertionError: {where} gave {_short(value)}, expected {_short(test.expected)}",
    )


def _ending(run: RawRun, done: bool) -> tuple[str, str]:
    """The status from how the process ended, once every split test held (or one is missing)."""
    if run.timed_out or run.returncode == -signal.SIGXCPU:
        return "timeout", ""
    if run.returncode == 0:
        return ("passed", "") if done else ("error", EARLY_EXIT)
    last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
    return ("failed" if last.startswith("AssertionError") else "error"), ""


def _text(message: Any, size: int) -> str:
    """A record's message, at most ``size`` characters: the harness writes a string, a
    forged record any JSON (printed with :func:`_short`, which survives deep nesting)."""
    return (message if isinstance(message, str) else _short(message))[:size]


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # ints past 4300 digits, very deep nesting
        return f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= 120 else text[:117] + "..."
