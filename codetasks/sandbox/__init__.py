"""Execution sandbox that scores generated Python against its unit tests.

Threat model (README, "Sandbox"): generated code is hostile. It runs in its own interpreter,
inside bubblewrap namespaces where they work (:mod:`.isolation`), under rlimits and the
HumanEval-style in-process guard (:mod:`.harness`), as a uid of its own when we are root. Its
verdict is computed outside it, EvalPlus-style (:mod:`.verdict`, :mod:`.judge`): the test
calls run inside, their outputs come back as plain data, the expected values stay here.
"""

from __future__ import annotations

from codetasks.examples import Example, example_problem
from codetasks.sandbox import isolation
from codetasks.sandbox.judge import SKIPPED, STATUSES, SandboxResult, judge
from codetasks.sandbox.runner import execute
from codetasks.sandbox.verdict import TestPlan, plan_tests

__all__ = [
    "SKIPPED", "STATUSES", "SandboxResult", "TestPlan", "build_program", "check_generation",
    "example_problem", "plan_tests", "privilege_drop_active", "run_program", "sandbox_mode",
]  # fmt: skip
# Report fields (constants, spelled once): which isolation ran and how tests were judged.
SANDBOX_MODE = "sandbox-mode"
TESTS_SPLIT = "sandbox-tests-split"
TESTS_IN_SANDBOX = "sandbox-tests-in-sandbox"


def sandbox_mode() -> str:
    """The isolation this machine gives: ``"bubblewrap"`` or the ``"guard"`` fallback."""
    return isolation.best_mode()


def privilege_drop_active() -> bool:
    """True when sandboxed programs run as an unprivileged user (we are root)."""
    return isolation.launch_config()[1]


def run_program(
    program: str, *, timeout_s: float = 10.0, memory_mb: int = 1024, cpu_s: int | None = None,
    mode: str | None = None, plan: TestPlan | None = None,
) -> SandboxResult:  # fmt: skip
    """Run ``program`` (then ``plan``'s tests) in the sandbox and report how it ended.

    ``mode`` forces ``"bubblewrap"`` or ``"guard"``; the default is the best that works.
    """
    mode = mode or sandbox_mode()
    if mode not in isolation.MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; valid: {', '.join(isolation.MODES)}")
    if mode == isolation.BUBBLEWRAP and sandbox_mode() != isolation.BUBBLEWRAP:
        raise RuntimeError("sandbox: bubblewrap does not work on this machine")
    plan = plan or TestPlan((), (), 0)
    job = {"program": program, "calls": [test.sandbox_call for test in plan.split],
           "asserts": list(plan.in_sandbox), "entry_point": plan.entry_point}  # fmt: skip
    cpu_limit = cpu_s if cpu_s is not None else int(timeout_s) + 2
    raw = execute(job, mode=mode, timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_limit)
    return judge(plan, raw)


def build_program(example: Example, code: str) -> str:
    """Join setup and candidate code, then every test, as MBPP and HumanEval execute them
    (the whole in-sandbox program; :func:`check_generation` splits the tests off instead)."""
    if not example.tests:
        raise ValueError(f"Example {example.uid!r} has no tests to execute")
    parts = [example.test_setup, code, *example.tests]
    if example.entry_point:
        # HumanEval: `tests` holds `def check(candidate): ...`, called on the entry point.
        parts.append(f"check({example.entry_point})")
    return "\n\n".join(part for part in parts if part) + "\n"


def check_generation(
    example: Example, code: str, *, timeout_s: float = 10.0, mode: str | None = None
) -> SandboxResult:
    """Execute ``code`` (a complete program) against the example's unit tests; an example
    that cannot be scored is ``"skipped"`` with the reason as its detail."""
    problem = example_problem(example)
    if problem is not None:
        return SandboxResult(SKIPPED, False, 0.0, problem, mode or sandbox_mode())
    program = "\n\n".join(part for part in (example.test_setup, code) if part) + "\n"
    plan = plan_tests(example.tests, example.entry_point)
    return run_program(program, timeout_s=timeout_s, mode=mode, plan=plan)
