"""CodeBLEU of C# code through the codebleu package and the tree-sitter C# grammar."""

from __future__ import annotations

import re

import pytest

from codetasks.metrics import codebleu as codebleu_module
from codetasks.metrics.codebleu import CodeBLEUUnavailable, codebleu_csharp

ADD = "public int Add(int a, int b) { int sum = a + b; return sum; }"
PRINT = "public void Print(string message) { Console.WriteLine(message); }"
COMPONENTS = {
    "codebleu",
    "ngram_match_score",
    "weighted_ngram_match_score",
    "syntax_match_score",
    "dataflow_match_score",
}


def test_identical_csharp_scores_one_on_every_component() -> None:
    scores = codebleu_csharp([ADD], [ADD])
    assert set(scores) == COMPONENTS
    for name, value in scores.items():
        assert value == pytest.approx(1.0), name


def test_unrelated_csharp_scores_much_lower() -> None:
    scores = codebleu_csharp([PRINT], [ADD])
    assert scores["codebleu"] < 0.5
    assert scores["ngram_match_score"] < 0.1
    assert scores["syntax_match_score"] < 1.0


def test_a_small_edit_scores_in_between() -> None:
    edited = ADD.replace("int sum = a + b; return sum;", "return a + b;")
    middle = codebleu_csharp([edited], [ADD])["codebleu"]
    assert codebleu_csharp([PRINT], [ADD])["codebleu"] < middle < 1.0


def test_missing_grammar_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import codebleu.utils

    def broken(lang: str) -> None:
        raise TypeError("an integer is required")

    monkeypatch.setattr(codebleu.utils, "get_tree_sitter_language", broken)
    with pytest.raises(CodeBLEUUnavailable, match=re.escape("tree-sitter-c-sharp==0.21.3")):
        codebleu_module.codebleu_csharp([ADD], [ADD])
