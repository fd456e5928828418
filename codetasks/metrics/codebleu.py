"""CodeBLEU for Java-to-C# translation (Ren et al., 2020, arXiv 2009.10297).

CodeBLEU = 0.25 * (BLEU + keyword-weighted BLEU + AST match + data-flow match), computed by
the ``codebleu`` PyPI package (a packaging of the CodeXGLUE implementation) with the
tree-sitter C# grammar from ``tree-sitter-c-sharp``. Two behaviours of that package to keep
in mind when reading scores: data-flow match is corpus-level and degenerates to 0 (with a
logged warning) when the references yield no data flow, and the package then counts that
component as 1 in the total (``dataflow_match_score or 1``, codebleu issue #59), unlike the
original CodeXGLUE script.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from codetasks.metrics._pairs import check_pairs

LANGUAGE = "c_sharp"
_INSTALL_HINT = (
    "CodeBLEU for C# needs the packages codebleu==0.7.0, tree-sitter==0.22.3 and "
    "tree-sitter-c-sharp==0.21.3 (codebleu 0.7 pins tree-sitter<0.23, which takes a grammar as "
    "an integer pointer; tree-sitter-c-sharp>=0.23 hands over a capsule and fails with TypeError)"
)


class CodeBLEUUnavailable(RuntimeError):
    """The codebleu package or its tree-sitter C# grammar cannot be loaded."""


def codebleu_csharp(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """CodeBLEU and its four components (each 0-1) of C# predictions against references."""
    check_pairs(predictions, references)
    scores = _calc_codebleu()(list(references), list(predictions), lang=LANGUAGE)
    return {name: float(value) for name, value in scores.items()}


def _calc_codebleu() -> Callable[..., dict[str, Any]]:
    try:
        from codebleu import calc_codebleu
        from codebleu.utils import get_tree_sitter_language

        get_tree_sitter_language(LANGUAGE)  # fail here, not midway through scoring
    except (ImportError, OSError, TypeError, ValueError) as error:
        raise CodeBLEUUnavailable(f"{_INSTALL_HINT}: {error}") from error
    return calc_codebleu  # type: ignore[no-any-return]
