"""Evaluate a base model, an exported adapter, or a run's adapter on one code benchmark.

Follows the evaluation protocol of the multi-task QLoRA code study (arXiv 2601.15094): greedy
pass@1 of generated Python executed against unit tests in a sandbox (here MBPP, Austin et al.
2021, and HumanEval, Chen et al. 2021), with Pylint/Flake8 message counts and Lizard
cyclomatic complexity of that Python; BLEU-4, exact match and CodeBLEU for CodeXGLUE Java→C#
translation; smoothed BLEU-4, ROUGE-L, chrF (and METEOR where WordNet is installed) for
summarization. :func:`evaluate_model` is the Python API (the federated client calls it on its
local validation split); its command line is ``python -m colora evaluate`` (:mod:`colora.__main__`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetasks.examples import Example, example_problem
from codetasks.metrics import TASK_METRICS, CodeBLEUUnavailable, corpus_bleu4, exact_match
from codetasks.metrics.bleu import smoothed_bleu4
from codetasks.metrics.code_quality import aggregate_quality, quality_report
from codetasks.metrics.execution import candidate_program, run_generation, summarize
from codetasks.metrics.rouge import rouge_l
from codetasks.prompts import COMPLETION_FORMAT, parse_answer, user_prompt
from codetasks.sandbox import SANDBOX_MODE, SKIPPED, sandbox_mode
from colora.generate import generate_with_stats
from runconfig.schema import ModelSettings

log = logging.getLogger(__name__)

SKIPPED_EXAMPLES = "skipped-examples"  # examples left out of scoring, each with its reason
# Scores of one (prediction, reference) pair, stored with each example of the report.
PER_EXAMPLE_METRICS = {
    "translation": {"bleu4": corpus_bleu4, "exact_match": exact_match},
    "summarization": {"smoothed_bleu4": smoothed_bleu4, "rouge_l": rouge_l},
}


@dataclass(frozen=True)
class EvalSettings:
    """How to generate and score; ``max_new_tokens=None`` takes each task's default."""

    batch_size: int = 16
    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    quality: bool = True  # lint generated Python (two linter processes per example)
    timeout_s: float = 10.0  # per sandboxed program
    progress: bool = False


@dataclass(frozen=True, kw_only=True)
class EvalReport:
    """Aggregate metrics (0-100 scale) and per-example records of one evaluation."""

    model: str = ""
    task: str
    benchmark: str = ""
    split: str = ""
    limit: int | None = None
    metrics: dict[str, float]
    seconds: dict[str, float]
    tokens_per_second: float
    new_tokens: int
    settings: dict[str, Any]
    examples: list[dict[str, Any]]

    @property
    def n(self) -> int:
        return len(self.examples)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: the fields in order, with ``n`` after ``limit``."""
        fields = dataclasses.asdict(self)
        head = list(fields)[: list(fields).index("limit") + 1]
        return {k: fields[k] for k in head} | {"n": self.n} | fields

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path


def evaluate_model(
    model, tokenizer, examples: Sequence[Example], task: str,
    settings: EvalSettings = EvalSettings(),
) -> EvalReport:  # fmt: skip
    """Generate a reply per example, parse it, and score the answers for ``task``."""
    if not examples:
        raise ValueError("no examples to evaluate")
    if any(example.task != task for example in examples):
        raise ValueError(f"every example must be of task {task!r}")
    problems = {index: example_problem(example) for index, example in enumerate(examples)}
    scorable = [example for index, example in enumerate(examples) if problems[index] is None]
    report = _evaluate_scorable(model, tokenizer, scorable, task, settings)
    skipped = {index: reason for index, reason in problems.items() if reason is not None}
    if not skipped:
        return report
    for reason in skipped.values():
        log.warning("evaluation skips %s", reason)
    records = iter(report.examples)
    merged = [_skipped_record(examples[i], skipped[i]) if i in skipped else next(records)
              for i in range(len(examples))]  # fmt: skip
    metrics = report.metrics | {SKIPPED_EXAMPLES: float(len(skipped))}
    return dataclasses.replace(report, examples=merged, metrics=metrics)


def _skipped_record(example: Example, reason: str) -> dict[str, Any]:
    return {"uid": example.uid, "status": SKIPPED, "passed": False, "error": reason}


def _evaluate_scorable(
    model, tokenizer, examples: Sequence[Example], task: str, settings: EvalSettings
) -> EvalReport:
    """Generate and score ``examples``, all of which can be scored."""
    if not examples:
        return EvalReport(task=task, metrics={}, seconds={"generation": 0.0, "scoring": 0.0},
                          tokens_per_second=0.0, new_tokens=0, examples=[],
                          settings=dataclasses.asdict(settings))  # fmt: skip
    generated = generate_with_stats(
        model, tokenizer, examples, batch_size=settings.batch_size,
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
        top_p=settings.top_p, progress=settings.progress,
    )  # fmt: skip
    parsed = [parse_answer(task, text) for text in generated.texts]
    records = [
        {"uid": example.uid, "prompt": user_prompt(example), "prediction": text,
         "parsed": answer, "reference": example.target}
        for example, text, answer in zip(examples, generated.texts, parsed, strict=True)
    ]  # fmt: skip
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if task == "generation":
        metrics = _score_generation(parsed, examples, records, settings)
        extra = {SANDBOX_MODE: sandbox_mode()}
    else:
        metrics = _score_references(task, parsed, examples, records)
    seconds = {"generation": generated.seconds, "scoring": time.perf_counter() - start}
    return EvalReport(
        task=task, metrics=metrics, seconds=seconds,
        tokens_per_second=generated.tokens_per_second, new_tokens=generated.new_tokens,
        examples=records, settings=dataclasses.asdict(settings) | extra,
    )  # fmt: skip


def _score_generation(
    parsed: list[str], examples: Sequence[Example], records: list[dict], settings: EvalSettings
) -> dict[str, float]:
    """pass@1, sandbox status shares and test-path counts (:func:`summarize`); with
    ``settings.quality``, mean linter counts."""
    results = run_generation(parsed, examples, timeout_s=settings.timeout_s)
    metrics = summarize(results)
    for record, result in zip(records, results, strict=True):
        last_line = result.detail.strip().splitlines()[-1:] if not result.passed else []
        record.update(status=result.status, passed=result.passed, error="".join(last_line),
                      **{SANDBOX_MODE: result.mode})  # fmt: skip
    if settings.quality:
        metrics.update(_score_quality(parsed, examples, records))
    return metrics


def _score_quality(
    parsed: list[str], examples: Sequence[Example], records: list[dict]
) -> dict[str, float]:
    """Mean linter counts and complexity over the non-empty answers (no code is not clean
    code); ``quality.reports`` is how many were linted."""
    reports = []
    for example, answer, record in zip(examples, parsed, records, strict=True):
        if answer.strip():
            record["quality"] = quality_report(_linted_code(example, answer))
            reports.append(record["quality"])
    if not reports:
        return {"quality.reports": 0.0}
    return {f"quality.{k}": v for k, v in aggregate_quality(reports).items()}


def _linted_code(example: Example, answer: str) -> str:
    """The model's own Python: the answer, or for a HumanEval body the completed function."""
    if example.meta.get("format") != COMPLETION_FORMAT or not example.entry_point:
        return answer
    if re.search(rf"^\s*def\s+{re.escape(example.entry_point)}\s*\(", answer, re.M):
        return answer
    return candidate_program(example, answer)  # a bare body does not parse on its own


def _score_references(
    task: str, parsed: list[str], examples: Sequence[Example], records: list[dict]
) -> dict[str, float]:
    """The task's reference metrics, plus per-example sentence scores in ``records``."""
    per_example = PER_EXAMPLE_METRICS[task]
    for record, answer, example in zip(records, parsed, examples, strict=True):
        record["status"] = "scored" if answer.strip() else "empty"
        record.update(
            {name: metric([answer], [example.target]) for name, metric in per_example.items()}
        )
    try:
        return TASK_METRICS[task](parsed, examples)
    except CodeBLEUUnavailable as error:  # e.g. a client without tree-sitter: score the rest
        log.warning("CodeBLEU skipped: %s", error)
        references = [example.target for example in examples]
        return {name: metric(parsed, references) for name, metric in per_example.items()}


@dataclass(frozen=True)
class ModelChoice:
    """What to evaluate: a base model and, optionally, a PEFT adapter directory on top."""

    label: str
    base: ModelSettings
    adapter_dir: Path | None = None


def load_model(choice: ModelChoice):
    """The base model (frozen, NF4 or float) with the adapter loaded, and its tokenizer."""
    from peft import PeftModel

    from colora.base_model import load_base_model, load_tokenizer

    model = load_base_model(choice.base, inference_only=True)
    if choice.adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(choice.adapter_dir))
    return model, load_tokenizer(choice.base)
