"""Python source utilities built on :mod:`ast`: documented functions, docstring removal, and the
entry point an MBPP test calls.

Used to mine (function, docstring) pairs for code summarization in the style of CodeSearchNet /
CodeXGLUE code-to-text (Husain et al. 2019, arXiv 1909.09436): the model sees the function with
its docstring removed and predicts the docstring's summary.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
# What ast raises on source it cannot take: syntax errors, NUL bytes (ValueError), and deep
# nesting (``x = ----…1``), which overflows the parser's stack (MemoryError) or the recursion
# of ast.unparse and of our own walk (RecursionError). Dataset code is untrusted input.
UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError)


@dataclass(frozen=True)
class DocumentedFunction:
    """A function or method with a docstring, as found in one source file."""

    qualname: str  # "Class.method" for methods, "outer.inner" for nested functions
    lineno: int
    docstring: str  # cleaned by ast.get_docstring (indentation removed)
    code: str  # the original source lines, dedented, with the docstring removed


def _docstring_node(node: _FunctionNode) -> ast.Expr | None:
    first = node.body[0] if node.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first
    return None


def _dedent(lines: list[str], columns: int) -> list[str]:
    # Remove the def's own indentation only; textwrap.dedent would give up on methods whose
    # multi-line string literals start at column 0.
    return [line[columns:] if line[:columns].isspace() else line for line in lines]


def _unparse_without_docstring(node: _FunctionNode) -> str:
    copy = ast.parse(ast.unparse(node)).body[0]
    assert isinstance(copy, ast.FunctionDef | ast.AsyncFunctionDef)
    copy.body = copy.body[1:] or [ast.Pass()]
    return ast.unparse(copy)


def code_without_docstring(lines: list[str], node: _FunctionNode) -> str:
    """The source of ``node`` (decorators excluded) with its docstring lines removed.

    Keeps the original formatting; falls back to ``ast.unparse`` when the docstring shares a
    line with other code (``def f(): "doc"; return 1``). A body of only a docstring keeps
    ``pass`` so the result still parses.
    """
    doc = _docstring_node(node)
    assert node.end_lineno is not None
    if doc is None:
        body = lines[node.lineno - 1 : node.end_lineno]
        return "\n".join(_dedent(body, node.col_offset)).rstrip()
    rest = node.body[1:]
    assert doc.end_lineno is not None
    if doc.lineno == node.lineno or (rest and rest[0].lineno == doc.end_lineno):
        return _unparse_without_docstring(node)
    head = lines[node.lineno - 1 : doc.lineno - 1]
    tail = lines[doc.end_lineno : node.end_lineno]
    while tail and not tail[0].strip():
        tail = tail[1:]  # the blank line that usually follows a docstring
    if not rest:
        tail = [" " * doc.col_offset + "pass"]
    return "\n".join(_dedent(head + tail, node.col_offset)).rstrip()


def _walk_functions(node: ast.AST, prefix: str) -> Iterator[tuple[str, _FunctionNode]]:
    # Source order (ast.walk is breadth-first), so "first occurrence" is well defined.
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + child.name, child
            yield from _walk_functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _walk_functions(child, f"{prefix}{child.name}.")
        else:
            yield from _walk_functions(child, prefix)


def iter_functions(tree: ast.Module) -> Iterator[tuple[str, _FunctionNode]]:
    """Every function and method in ``tree`` with its qualified name, in source order."""
    return _walk_functions(tree, "")


def documented_function(
    source_lines: list[str], qualname: str, node: _FunctionNode
) -> DocumentedFunction | None:
    """The :class:`DocumentedFunction` for ``node``, or ``None`` without a docstring."""
    docstring = ast.get_docstring(node, clean=True)
    if not docstring:
        return None
    code = code_without_docstring(source_lines, node)
    return DocumentedFunction(qualname, node.lineno, docstring, code)


def strip_docstring(code: str) -> str:
    """``code`` (one function) without its docstring; unchanged if it has none or won't parse.

    Used on hub/JSONL summarization records whose ``code`` field still holds the docstring
    (CodeXGLUE code-to-text does); much of that corpus is Python 2, which does not parse.
    """
    try:
        tree = ast.parse(code)
        functions = [n for n in tree.body if isinstance(n, _FunctionNode)]
        if len(functions) != 1 or _docstring_node(functions[0]) is None:
            return code
        return code_without_docstring(code.splitlines(), functions[0])
    except UNPARSABLE:
        return code


def _called_names(test: str) -> list[str]:
    try:
        tree = ast.parse(test)
    except UNPARSABLE:
        return []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    calls.sort(key=lambda n: (n.lineno, n.col_offset))
    return [c.func.id for c in calls if isinstance(c.func, ast.Name)]


def guess_entry_point(code: str, tests: tuple[str, ...] | list[str]) -> str:
    """The function an MBPP test exercises: the first name called in the first test that the
    reference code defines at top level; else the last top-level function; else ``""``.
    """
    try:
        defined = [
            n.name
            for n in ast.parse(code).body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
    except UNPARSABLE:
        return ""
    called = _called_names(tests[0]) if tests else []
    for name in called:
        if name in defined:
            return name
    return defined[-1] if defined else ""
