"""Split unit tests into (call, expected value) pairs and judge a run's outputs outside it.

Follows EvalPlus (Liu et al., NeurIPS 2023, arXiv 2305.01210; ``evalplus/evaluate.py``):
the test inputs run in the sandbox, their outputs come back as plain data, and the parent
compares them with the expected values, which never enter the sandbox. An MBPP test
``assert f(x) == y`` splits into the call ``f(x)`` and the expected ``y``; ``assert f(x)`` and
``assert not f(x)`` compare truthiness; ``assert math.isclose(f(x), y, rel_tol=...)`` compares
with that tolerance. A HumanEval ``check(candidate)`` splits when every statement in it is such
an assert. The computed side must hold no comparison (else the program could answer it), and
the expected side must be a literal (optionally wrapped in ``set``/``tuple``/... ). Anything
else stays an in-sandbox assert, counted in :attr:`TestPlan.in_sandbox_tests`.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any

EQ, TRUTH, ISCLOSE = "eq", "truth", "isclose"
# Builtins an expected value may be wrapped in, e.g. MBPP's `== set([4, 5])`.
_EXPECTED_WRAPPERS = {"set": set, "frozenset": frozenset, "tuple": tuple, "list": list,
                      "sorted": sorted, "dict": dict}  # fmt: skip
_ISCLOSE_NAMES = ("math.isclose", "isclose")


@dataclass(frozen=True)
class SplitTest:
    """One test whose ``call`` runs in the sandbox and whose ``expected`` stays outside."""

    call: str
    expected: Any
    compare: str = EQ
    rel_tol: float = 1e-9
    abs_tol: float = 0.0

    @property
    def sandbox_call(self) -> str:
        """What the sandbox evaluates: a truth test's value may be any object, so the
        sandbox takes its truth (``not`` always gives a real bool; the polarity stays here)."""
        return f"not not ({self.call})" if self.compare == TRUTH else self.call

    def holds(self, value: Any) -> bool:
        """Whether the decoded plain ``value`` satisfies the test."""
        if self.compare == TRUTH:
            return value is self.expected
        if self.compare == ISCLOSE:
            try:
                return math.isclose(value, self.expected, rel_tol=self.rel_tol,
                                    abs_tol=self.abs_tol)  # fmt: skip
            except (TypeError, OverflowError):  # not a number, or an int past float range
                return False
        return bool(value == self.expected)


@dataclass(frozen=True)
class TestPlan:
    """The split tests, and the test sources that must run as in-sandbox asserts."""

    __test__ = False  # not a pytest class, despite its name

    split: tuple[SplitTest, ...]
    in_sandbox: tuple[str, ...]
    in_sandbox_tests: int  # assert statements among ``in_sandbox``
    entry_point: str = ""

    @property
    def split_tests(self) -> int:
        return len(self.split)


def plan_tests(tests: tuple[str, ...], entry_point: str = "") -> TestPlan:
    """MBPP-style assert lines, or (with ``entry_point``) HumanEval's ``check`` module."""
    if entry_point:
        return _plan_check(tests, entry_point)
    split, kept = [], []
    for test in tests:
        one = _split_statements(test)
        if one is None:
            kept.append(test)
        else:
            split.extend(one)
    return TestPlan(tuple(split), tuple(kept), sum(_count_asserts(t) for t in kept))


def _plan_check(tests: tuple[str, ...], entry_point: str) -> TestPlan:
    body = [_check_body(test) for test in tests]
    if all(b is not None for b in body):
        split = [t for statements in body for t in _split_list(statements) or [None]]
        if split and None not in split:
            return TestPlan(tuple(split), (), 0, entry_point)
    kept = (*tests, f"check({entry_point})")
    return TestPlan((), kept, sum(_count_asserts(t) for t in tests), entry_point)


def _check_body(source: str) -> list[ast.stmt] | None:
    """The statements of ``def check(candidate)`` if the module holds only it and literals."""
    module = _parse(source)
    if module is None:
        return None
    checks = [s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == "check"]
    others = [s for s in module.body if s not in checks]
    if len(checks) != 1 or not all(_is_inert(s, assignments=True) for s in others):
        return None
    return checks[0].body


def _split_statements(source: str) -> list[SplitTest] | None:
    module = _parse(source)
    return None if module is None else _split_list(module.body)


def _split_list(statements: list[ast.stmt]) -> list[SplitTest] | None:
    split = []
    for statement in statements:
        if _is_inert(statement) or _is_assert_true(statement):
            continue
        one = _split_assert(statement.test) if isinstance(statement, ast.Assert) else None
        if one is None:
            return None
        split.append(one)
    return split or None


def _split_assert(test: ast.expr) -> SplitTest | None:
    if isinstance(test, ast.Compare):
        if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
            return None
        left, right = test.left, test.comparators[0]
        for computed, literal in ((left, right), (right, left)):
            expected = _expected(literal)
            if expected is not None and _computable(computed):
                return SplitTest(ast.unparse(computed), expected[0])
        return None
    if isinstance(test, ast.Call) and ast.unparse(test.func) in _ISCLOSE_NAMES:
        return _split_isclose(test)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _split_assert(test.operand)
        return None if inner is None or inner.compare != TRUTH else _negate(inner)
    if isinstance(test, ast.Call | ast.Name | ast.Attribute | ast.Subscript) and _computable(test):
        return SplitTest(ast.unparse(test), True, TRUTH)
    return None


def _negate(test: SplitTest) -> SplitTest:
    return SplitTest(test.call, not test.expected, TRUTH)


def _split_isclose(call: ast.Call) -> SplitTest | None:
    if len(call.args) != 2 or any(k.arg not in ("rel_tol", "abs_tol") for k in call.keywords):
        return None
    tolerances = {k.arg: _expected(k.value) for k in call.keywords}
    if None in tolerances.values():
        return None
    tol = {name: value[0] for name, value in tolerances.items()}  # type: ignore[index]
    for computed, literal in (call.args, call.args[::-1]):
        expected = _expected(literal)
        if expected is not None and _computable(computed):
            return SplitTest(ast.unparse(computed), expected[0], ISCLOSE, **tol)
    return None


def _expected(node: ast.expr) -> tuple[Any] | None:
    """``(value,)`` of a literal, or of a literal in one wrapper call; else None."""
    try:
        return (ast.literal_eval(node),)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id in _EXPECTED_WRAPPERS and not node.keywords and len(node.args) <= 1
    ):  # fmt: skip
        inner = _expected(node.args[0]) if node.args else ((),)
        if inner is not None:
            try:
                return (_EXPECTED_WRAPPERS[node.func.id](*inner),)
            except (TypeError, ValueError):
                return None
    return None


def _computable(node: ast.expr) -> bool:
    """A computed side may not compare: a comparison made in the sandbox is the program's."""
    return not any(isinstance(n, ast.Compare | ast.BoolOp | ast.Lambda) for n in ast.walk(node))


def _is_inert(statement: ast.stmt, assignments: bool = False) -> bool:
    """A docstring, ``pass``, or (with ``assignments``, for HumanEval's module level, where
    the calls cannot see them) a literal assignment such as ``METADATA``."""
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Expr):
        return isinstance(statement.value, ast.Constant)
    if assignments and isinstance(statement, ast.Assign):
        names = all(isinstance(target, ast.Name) for target in statement.targets)
        return names and _expected(statement.value) is not None
    return False


def _is_assert_true(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Assert)
        and isinstance(statement.test, ast.Constant)
        and statement.test.value is True
    )


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _count_asserts(source: str) -> int:
    module = _parse(source)
    return 0 if module is None else sum(isinstance(n, ast.Assert) for n in ast.walk(module))
