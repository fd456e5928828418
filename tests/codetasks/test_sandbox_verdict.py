"""Issue 14, section 3: the verdict is computed where the program cannot reach it.

Tests split into (call, expected); the calls run in the sandbox, the outputs come back as
plain data and are compared here. Forging attacks that beat a pass token (reading the
harness's frames, a traceback's frames, an excepthook, an always-equal object) must fail.
"""

from __future__ import annotations

import math

import pytest

from codetasks.examples import Example
from codetasks.sandbox import check_generation, plan_tests
from codetasks.sandbox.harness import NotPlain, encode
from codetasks.sandbox.judge import EARLY_EXIT, TAMPERED, decode, judge
from codetasks.sandbox.runner import RawRun
from codetasks.sandbox.verdict import ISCLOSE, TRUTH, SplitTest, TestPlan
from tests.codetasks.sandbox_support import MODES

ADD = Example(task="generation", uid="mbpp/add", source="Add two numbers.",
              target="def add(a, b):\n    return a + b\n",
              tests=("assert add(1, 2) == 3", "assert add(20, 22) == 42"))  # fmt: skip
DOUBLE = Example(
    task="generation", uid="humaneval/d", source='def double(x):\n    """2x."""\n',
    target="    return 2 * x\n", entry_point="double",
    tests=("METADATA = {'author': 'x'}\n\n\ndef check(candidate):\n"
           "    assert candidate(2) == 4\n    assert candidate(0) == 0\n"
           "    assert True, 'a note'\n",),
)  # fmt: skip


# --- splitting -------------------------------------------------------------------------------


def test_mbpp_equality_asserts_split_into_call_and_expected() -> None:
    plan = plan_tests(("assert add(1, 2) == 3", "assert (4, 5) == f(x=[1, 2])"))
    assert plan.split == (SplitTest("add(1, 2)", 3), SplitTest("f(x=[1, 2])", (4, 5)))
    assert (plan.split_tests, plan.in_sandbox_tests, plan.in_sandbox) == (2, 0, ())


def test_wrapped_literals_truth_and_isclose_split_too() -> None:
    plan = plan_tests((
        "assert set(f((3, 4))) == set((4, 3))",
        "assert is_prime(7)",
        "assert not is_prime(8)",
        "assert math.isclose(area(2), 12.56, rel_tol=0.001)",
    ))  # fmt: skip
    assert plan.split == (
        SplitTest("set(f((3, 4)))", {3, 4}),
        SplitTest("is_prime(7)", True, TRUTH),
        SplitTest("is_prime(8)", False, TRUTH),
        SplitTest("area(2)", 12.56, ISCLOSE, rel_tol=0.001),
    )
    assert plan.split[1].sandbox_call == "not not (is_prime(7))"


@pytest.mark.parametrize(
    "test",
    [
        "assert f(x) == sys.getsizeof(x)",  # the expected value needs code
        "assert abs(f(x) - 0.5) < 1e-6",  # a comparison computed inside could be forged
        "assert (f(x) == 3) == True",
        "assert f(x) == 3 and f(y) == 4",
        "for i in range(3):\n    assert f(i) == i",
        "x = [1, 2]\nassert f(x) == 3",
        "assert f(",  # does not parse: the in-sandbox run reports the SyntaxError
    ],
)
def test_other_tests_stay_in_the_sandbox_and_are_counted(test: str) -> None:
    plan = plan_tests(("assert add(1, 2) == 3", test))
    assert plan.split == (SplitTest("add(1, 2)", 3),)
    assert plan.in_sandbox == (test,)
    assert plan.in_sandbox_tests == (0 if test == "assert f(" else test.count("assert"))


def test_humaneval_check_splits_when_every_statement_is_a_plain_assert() -> None:
    plan = plan_tests(DOUBLE.tests, "double")
    assert plan.split == (SplitTest("candidate(2)", 4), SplitTest("candidate(0)", 0))
    assert (plan.in_sandbox, plan.entry_point) == ((), "double")
    looped = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == 2 * x\n"
    plan = plan_tests((looped,), "double")
    assert plan.split == () and plan.in_sandbox == (looped, "check(double)")
    assert plan.in_sandbox_tests == 1


# --- plain data --------------------------------------------------------------------------------


PLAIN = [None, True, 0, -(10**5000), 2.5, math.inf, 1 + 2j, "é\ud800", b"\x00\xff",
         [1, [2]], (1, (2,)), {1, 2}, frozenset({3}), {"a": (1, 2), 3: None}]  # fmt: skip


@pytest.mark.parametrize("value", PLAIN, ids=lambda value: type(value).__name__)
def test_plain_values_survive_the_round_trip(value) -> None:
    decoded = decode(encode(value))
    assert decoded == value and type(decoded) is type(value)


def test_nan_keeps_its_identity_as_a_float() -> None:
    assert math.isnan(decode(encode(math.nan)))


class AlwaysEqual:
    def __eq__(self, other):
        return True

    def __repr__(self) -> str:  # no address: the test ids must be the same in every process
        return "AlwaysEqual()"


class SneakyInt(int):
    def __eq__(self, other):
        return True


@pytest.mark.parametrize(
    "value", [AlwaysEqual(), SneakyInt(1), [1, AlwaysEqual()], {"k": SneakyInt(2)}], ids=repr
)
def test_objects_of_other_classes_are_not_plain(value) -> None:
    with pytest.raises(NotPlain):
        encode(value)


def test_huge_or_self_referential_outputs_are_refused() -> None:
    loop: list = []
    loop.append(loop)
    with pytest.raises(NotPlain):
        encode(loop)
    shared: list = [0]
    for _ in range(40):
        shared = [shared, shared]  # 2**40 nodes, shared
    with pytest.raises(NotPlain):
        encode(shared)


# --- judging untrusted records ----------------------------------------------------------------


PLAN = TestPlan((SplitTest("f(1)", 2), SplitTest("f(2)", 4)), (), 0)


def _run(records: list, returncode: int | None = 0, timed_out: bool = False) -> RawRun:
    return RawRun("guard", returncode, timed_out, 0.1, records, "")


def _value(index: int, value) -> dict:
    return {"i": index, "value": encode(value)}


def test_right_outputs_and_a_done_record_pass() -> None:
    result = judge(PLAN, _run([_value(0, 2), _value(1, 4), {"done": True}]))
    assert (result.status, result.split_tests, result.in_sandbox_tests) == ("passed", 2, 0)


@pytest.mark.parametrize(
    ("records", "status", "reason"),
    [
        ([_value(0, 2), _value(0, 2), _value(1, 4), {"done": True}], "error", TAMPERED),
        ([_value(0, 2), _value(7, 4), {"done": True}], "error", TAMPERED),
        ([{"i": 0, "value": {"cls": "AlwaysEqual"}}, _value(1, 4), {"done": True}], "error",
         TAMPERED),
        ([_value(0, 2), {"done": True}], "error", EARLY_EXIT),
        ([_value(0, 3), _value(1, 4), {"done": True}], "failed", "expected 2"),
        ([{"i": 0, "not_plain": "returned a X object"}, {"done": True}], "failed", "X object"),
        ([{"i": 0, "raised": "ValueError: no"}, {"done": True}], "error", "ValueError: no"),
        (["junk line", _value(0, 2), _value(1, 4), {"done": True}], "passed", ""),
        # Bodies of the wrong JSON type or past the float range: tampered, never a crash.
        ([{"i": 0, "value": {"complex": {}}}, _value(1, 4), {"done": True}], "error", TAMPERED),
        ([{"i": 0, "value": {"float": "0x1p99999"}}, _value(1, 4), {"done": True}], "error",
         TAMPERED),
        ([{"i": 0, "raised": [[["deep"]]]}, {"done": True}], "error", "[[['deep']]]"),
    ],
)  # fmt: skip
def test_records_the_harness_cannot_have_written_never_pass(records, status, reason) -> None:
    result = judge(PLAN, _run(records))
    assert result.status == status and reason in result.detail


def test_outputs_too_large_to_print_or_compare_still_get_a_verdict() -> None:
    huge = 10**5000
    result = judge(PLAN, _run([_value(0, huge), {"done": True}]))
    assert result.status == "failed" and "<a int too large to show>" in result.detail
    close = TestPlan((SplitTest("area(1)", 3.14, ISCLOSE, rel_tol=0.01),), (), 0)
    assert judge(close, _run([_value(0, huge), {"done": True}])).status == "failed"
    assert judge(close, _run([_value(0, 3.141), {"done": True}])).status == "passed"


def test_a_mismatch_before_a_hang_is_a_failure_and_a_bare_hang_a_timeout() -> None:
    assert judge(PLAN, _run([_value(0, 5)], returncode=-9, timed_out=True)).status == "failed"
    assert judge(PLAN, _run([_value(0, 2)], returncode=-9, timed_out=True)).status == "timeout"


# --- forging attacks, end to end ------------------------------------------------------------


FORGERIES = {
    "always-equal object": "class Any:\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = object.__hash__\n\ndef add(a, b):\n    return Any()\n",
    "int subclass": "class Int(int):\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = int.__hash__\n\ndef add(a, b):\n    return Int(0)\n",
    # Read the harness's frame, write its done record, leave before the tests run.
    "_getframe done record": "import sys, os\nscope = sys._getframe(1).f_locals\n"
    "os.write(scope['job']['channel_fd'], b'{\"done\": true}\\n')\nos._exit(0)\n",
    # The same through a traceback's frames.
    "traceback frames": "import os\ntry:\n    raise RuntimeError\nexcept RuntimeError as e:\n"
    "    frame = e.__traceback__.tb_frame.f_back\n"
    "os.write(frame.f_locals['job']['channel_fd'], b'{\"done\": true}\\n')\nos._exit(0)\n",
    # An excepthook that reports success after the program fails.
    "excepthook": "import sys, os\nchannel = sys._getframe(1).f_locals['job']['channel_fd']\n"
    "def hook(*args):\n    os.write(channel, b'{\"done\": true}\\n')\n    os._exit(0)\n"
    "sys.excepthook = hook\ndef add(a, b):\n    return a - b\nraise AssertionError\n",
    # Write a record per call first, with made-up outputs, then let the harness go on.
    "forged records": "import sys, os, json\njob = sys._getframe(1).f_locals['job']\n"
    "for i, _ in enumerate(job['calls']):\n"
    "    os.write(job['channel_fd'], json.dumps({'i': i, 'value': {'int': '3'}}).encode() + "
    "b'\\n')\ndef add(a, b):\n    return a - b\n",
    # Patch the harness's encoder (reached through its frame) to encode anything as 42.
    "patched encoder": "import sys\ng = sys._getframe(1).f_globals\n"
    "g['encode'] = lambda value, *rest: {'int': '2a'}\ndef add(a, b):\n    return a - b\n",
    # Replace the harness's own json.dumps so its records are whatever the program likes.
    "patched json": "import json\nreal = json.dumps\n"
    "json.dumps = lambda obj, *a, **k: real({**obj, 'value': {'int': '3'}} "
    "if 'i' in obj else obj)\ndef add(a, b):\n    return a - b\n",
}


# What stops each forgery: plain-data encoding, the missing outputs, duplicate records, or
# the outputs themselves compared here.
STOPPED_BY = {
    "always-equal object": "not plain data",
    "int subclass": "not plain data",
    "_getframe done record": EARLY_EXIT,
    "traceback frames": EARLY_EXIT,
    "excepthook": EARLY_EXIT,
    "forged records": TAMPERED,
    "patched encoder": "gave 42, expected 3",
    "patched json": "gave 3, expected 42",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_forged_verdicts_do_not_pass(mode: str, forgery: str) -> None:
    result = check_generation(ADD, FORGERIES[forgery], mode=mode)
    assert result.status in ("failed", "error"), result
    assert STOPPED_BY[forgery] in result.detail.splitlines()[-1]


@pytest.mark.parametrize("mode", MODES)
def test_an_always_equal_candidate_fails_humaneval_too(mode: str) -> None:
    code = "class Any:\n    def __eq__(self, other):\n        return True\n\n\n"
    result = check_generation(DOUBLE, code + "def double(x):\n    return Any()\n", mode=mode)
    assert result.status == "failed" and "not plain data" in result.detail
    assert (result.split_tests, result.in_sandbox_tests) == (2, 0)


@pytest.mark.parametrize("mode", MODES)
def test_each_path_scores_correct_code_and_reports_its_mode(mode: str) -> None:
    mixed = Example(task="generation", uid="mbpp/m", source="s", target="t",
                    tests=("assert add(1, 2) == 3", "assert add(1, 1) < 3"))  # fmt: skip
    result = check_generation(mixed, ADD.target, mode=mode)
    assert (result.status, result.mode) == ("passed", mode)
    assert (result.split_tests, result.in_sandbox_tests) == (1, 1)
    wrong = check_generation(mixed, "def add(a, b):\n    return 3\n", mode=mode)
    assert wrong.status == "failed" and "AssertionError" in wrong.detail
