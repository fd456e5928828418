"""Code-quality report: pylint categories, flake8 prefixes and lizard complexity."""

from __future__ import annotations

import pytest

from codetasks.metrics.code_quality import aggregate_quality, quality_report

# One unused import; a function with two ifs (CCN = 1 + 2 = 3) and no docstrings.
SIGN = """import os


def sign(x):
    if x > 0:
        return 1
    if x < 0:
        return -1
    return 0
"""
CLEAN = '''"""Adds numbers."""


def add(first, second):
    """Return the sum."""
    return first + second
'''


@pytest.fixture(scope="module")
def sign_report() -> dict[str, float]:
    return quality_report(SIGN)


@pytest.fixture(scope="module")
def clean_report() -> dict[str, float]:
    return quality_report(CLEAN)


def test_unused_import_and_missing_docstrings_are_counted(sign_report: dict[str, float]) -> None:
    # pylint: W0611 unused-import; C0114 module and C0116 function docstring missing.
    assert sign_report["pylint_warning"] == 1
    assert sign_report["pylint_convention"] == 2
    assert sign_report["pylint_error"] == sign_report["pylint_fatal"] == 0
    # flake8: F401 'os' imported but unused, nothing else.
    assert sign_report["flake8_F"] == 1
    assert sign_report["flake8_E"] == sign_report["flake8_W"] == sign_report["flake8_C"] == 0
    assert sign_report["pylint_failed"] == sign_report["flake8_failed"] == 0


def test_two_ifs_give_cyclomatic_complexity_three(sign_report: dict[str, float]) -> None:
    assert (sign_report["ccn_mean"], sign_report["ccn_max"], sign_report["functions"]) == (3, 3, 1)


def test_clean_code_has_no_findings(clean_report: dict[str, float]) -> None:
    counts = {k: v for k, v in clean_report.items() if k.startswith(("pylint_", "flake8_"))}
    assert set(counts.values()) == {0.0}
    assert clean_report["ccn_max"] == 1


def test_syntax_errors_are_errors_and_module_code_has_no_complexity() -> None:
    report = quality_report("x = (\n")
    assert report["pylint_error"] == 1  # E0001 syntax-error
    assert report["flake8_E"] == 1  # E999
    assert "ccn_mean" not in report


def test_a_linter_timeout_is_recorded_not_raised() -> None:
    report = quality_report(CLEAN, timeout_s=0.001)
    assert report["pylint_failed"] == report["flake8_failed"] == 1.0
    assert "pylint_warning" not in report and report["ccn_max"] == 1


def test_aggregate_takes_per_key_means(
    sign_report: dict[str, float], clean_report: dict[str, float]
) -> None:
    module_only = {"pylint_failed": 1.0, "flake8_failed": 0.0, "flake8_F": 2.0}
    summary = aggregate_quality([sign_report, clean_report, module_only])
    assert summary["pylint_warning"] == 0.5  # (1 + 0) / 2: the failed pylint run has no count
    assert summary["pylint_failed"] == pytest.approx(1 / 3)
    assert summary["flake8_F"] == 1.0  # (1 + 0 + 2) / 3
    assert summary["ccn_mean"] == 2.0  # (3 + 1) / 2
    assert summary["reports"] == 3
    with pytest.raises(ValueError):
        aggregate_quality([])
