"""Static code-quality report of generated Python: linter findings and cyclomatic complexity.

Counts pylint messages by category (convention, refactor, warning, error, fatal), flake8
findings by code prefix (E/W from pycodestyle, F from pyflakes, C from mccabe), and the
cyclomatic complexity (McCabe, 1976) of each function as measured by lizard. Both linters run
with their default rule sets and no project configuration, as subprocesses on a temporary
file with a timeout; the code itself is only parsed, never executed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import lizard

PYLINT_CATEGORIES: tuple[str, ...] = ("convention", "refactor", "warning", "error", "fatal")
FLAKE8_PREFIXES: tuple[str, ...] = ("E", "W", "F", "C")


def quality_report(code: str, *, timeout_s: float = 60.0) -> dict[str, float]:
    """Lint and measure one Python snippet.

    Keys: ``pylint_<category>`` and ``flake8_<prefix>`` (plus ``flake8_other``) counts,
    ``pylint_failed``/``flake8_failed`` (1.0 when that linter crashed or timed out, in which
    case its counts are absent), and, when the code defines functions, ``ccn_mean``,
    ``ccn_max`` and ``functions``.
    """
    with tempfile.TemporaryDirectory(prefix="fedcolora-quality-") as workdir:
        path = os.path.join(workdir, "snippet.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(code)
        rcfile = os.path.join(workdir, "empty.rc")
        open(rcfile, "w", encoding="utf-8").close()
        pylint = _start(workdir, "pylint", f"--rcfile={rcfile}", "--output-format=json",
                        "--score=n", "--persistent=n", path)  # fmt: skip
        flake8 = _start(workdir, "flake8", "--isolated", "--format=%(code)s", path)
        report = _pylint_counts(_finish(pylint, timeout_s))
        report.update(_flake8_counts(_finish(flake8, timeout_s)))
    report.update(_complexity(code))
    return report


def aggregate_quality(reports: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over the reports that have the key (e.g. ``ccn_mean`` only over code
    with functions); ``*_failed`` keys, present in every report, become failure rates."""
    if not reports:
        raise ValueError("no quality reports to aggregate")
    keys = sorted({key for report in reports for key in report})
    means = {}
    for key in keys:
        values = [report[key] for report in reports if key in report]
        means[key] = sum(values) / len(values)
    means["reports"] = float(len(reports))
    return means


def _start(workdir: str, module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=workdir, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], timeout_s: float) -> str | None:
    """The linter's stdout, or None when it timed out or crashed."""
    try:
        stdout, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    # pylint's exit status is a bit mask of message categories; 32 means a usage error.
    # flake8 exits 1 when it found something; anything else is a crash.
    crashed = proc.returncode >= 32 or proc.returncode < 0
    return None if crashed else stdout


def _pylint_counts(stdout: str | None) -> dict[str, float]:
    if stdout is None:
        return {"pylint_failed": 1.0}
    try:
        messages = json.loads(stdout or "[]")
    except ValueError:
        return {"pylint_failed": 1.0}
    counts = dict.fromkeys(PYLINT_CATEGORIES, 0)
    for message in messages:
        if message.get("type") in counts:
            counts[message["type"]] += 1
    return {"pylint_failed": 0.0} | {f"pylint_{k}": float(v) for k, v in counts.items()}


def _flake8_counts(stdout: str | None) -> dict[str, float]:
    if stdout is None:
        return {"flake8_failed": 1.0}
    counts = dict.fromkeys((*FLAKE8_PREFIXES, "other"), 0)
    for code in stdout.split():
        prefix = code[:1]
        counts[prefix if prefix in FLAKE8_PREFIXES else "other"] += 1
    return {"flake8_failed": 0.0} | {f"flake8_{k}": float(v) for k, v in counts.items()}


def _complexity(code: str) -> dict[str, float]:
    functions = lizard.analyze_file.analyze_source_code("snippet.py", code).function_list
    if not functions:
        return {}
    ccn = [function.cyclomatic_complexity for function in functions]
    return {
        "ccn_mean": sum(ccn) / len(ccn),
        "ccn_max": float(max(ccn)),
        "functions": float(len(ccn)),
    }
