"""Evaluate a base model, an exported adapter, or a run's adapter on one code benchmark.

Follows the evaluation protocol of the multi-task QLoRA code study (arXiv 2601.15094): greedy
pass@1 of generated Python executed against unit tests in a sandbox (here MBPP, Austin et al.
2021, and HumanEval, Chen et al. 2021), with Pylint/Flake8 message counts and Lizard
cyclomatic complexity of that Python; BLEU-4, exact match and CodeBLEU for CodeXGLUE Java→C#
translation; smoothed BLEU-4, ROUGE-L, chrF (and METEOR where WordNet is installed) for
summarization. :func:`evaluate_model` is the Python API (the federated client calls it on its
local validation split); :func:`run_evaluate` backs ``python -m codetasks evaluate``.
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

import torch

from codetasks.examples import Example, example_problem
from codetasks.generate import generate_with_stats
from codetasks.loading import load_task
from codetasks.metrics import TASK_METRICS, CodeBLEUUnavailable, corpus_bleu4, exact_match
from codetasks.metrics.bleu import smoothed_bleu4
from codetasks.metrics.code_quality import aggregate_quality, quality_report
from codetasks.metrics.execution import candidate_program, run_generation, summarize
from codetasks.metrics.rouge import rouge_l
from codetasks.prompts import COMPLETION_FORMAT, parse_answer, user_prompt
from codetasks.sandbox import SANDBOX_MODE, SKIPPED, sandbox_mode
from runconfig.schema import ModelSettings

log = logging.getLogger(__name__)

# Named benchmarks: (task, load_task source, default split).
BENCHMARKS: dict[str, tuple[str, str, str]] = {
    "mbpp": ("generation", "", "valid"),
    "humaneval": ("generation", "humaneval", "test"),
    "codexglue": ("translation", "", "valid"),
    "mined": ("summarization", "", "valid"),
}
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


def resolve_model(
    spec: str, *, base_model: str | None = None, quantization: str | None = None,
    client: int | None = None, shared: bool = False,
) -> ModelChoice:  # fmt: skip
    """``"base"``, an adapter directory, or a run directory (with ``client`` or ``shared``).

    The base model is ``base_model`` when given, else the run's ``model.source``, else the
    adapter's ``base_model_name_or_path`` when that directory exists, else the bundled model.
    """
    if spec == "base":
        return ModelChoice("base", ModelSettings(base_model or "bundled", quantization or "nf4"))
    path = Path(spec).expanduser()
    if (path / "adapter_config.json").is_file():
        config = json.loads((path / "adapter_config.json").read_text())
        recorded = config.get("base_model_name_or_path") or ""
        source = base_model or (recorded if Path(recorded).is_dir() else "bundled")
        return ModelChoice(str(path), ModelSettings(source, quantization or "nf4"), path)
    if (path / "config.json").is_file():
        return _run_model(path, base_model, quantization, client, shared)
    raise FileNotFoundError(f"{spec!r} is neither 'base', an adapter dir nor a run dir")


def _run_model(
    run_dir: Path, base_model: str | None, quantization: str | None, client: int | None,
    shared: bool,
) -> ModelChoice:  # fmt: skip
    if (client is None) == (not shared):
        raise ValueError(f"{run_dir} is a run directory: pass exactly one of --client/--shared")
    adapter = run_dir / ("shared_adapter" if shared else f"clients/client-{client}/adapter")
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no exported adapter at {adapter}")
    config = json.loads((run_dir / "config.json").read_text())
    base = ModelSettings(base_model or config.get("model.source", "bundled"),
                         quantization or config.get("model.quantization", "nf4"),
                         config.get("model.cache-dir", ""))  # fmt: skip
    return ModelChoice(f"{run_dir}:{adapter.relative_to(run_dir)}", base, adapter)


def load_model(choice: ModelChoice):
    """The base model (frozen, NF4 or float) with the adapter loaded, and its tokenizer."""
    from peft import PeftModel

    from colora.base_model import load_base_model, load_tokenizer

    model = load_base_model(choice.base, inference_only=True)
    if choice.adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(choice.adapter_dir))
    return model, load_tokenizer(choice.base)


def load_benchmark(
    benchmark: str, task: str | None, split: str | None, *, data_root: Path,
    limit: int | None = None,
) -> tuple[str, str, list[Example]]:  # fmt: skip
    """(task, split, examples) of a named benchmark or a ``.jsonl`` file of ``task``."""
    if benchmark in BENCHMARKS:
        bench_task, source, default_split = BENCHMARKS[benchmark]
        if task not in (None, bench_task):
            raise ValueError(f"benchmark {benchmark!r} is a {bench_task} benchmark, not {task}")
        task, split = bench_task, split or default_split
    elif benchmark.endswith(".jsonl"):
        if task is None:
            raise ValueError(f"--task is required for a JSONL benchmark ({benchmark})")
        source, split = benchmark, split or "valid"
    else:
        raise ValueError(
            f"unknown benchmark {benchmark!r}; valid: {', '.join(BENCHMARKS)}, *.jsonl"
        )
    return task, split, load_task(task, split, data_root=data_root, source=source, limit=limit)


def run_evaluate(args) -> tuple[EvalReport, Path]:
    """The ``evaluate`` subcommand: resolve, load, evaluate, and write the JSON report."""
    task, split, examples = load_benchmark(
        args.benchmark, args.task, args.split, data_root=args.data_root, limit=args.limit
    )
    choice = resolve_model(
        args.model, base_model=args.base_model, quantization=args.quantization,
        client=args.client, shared=args.shared,
    )  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)  # on a busy CPU, fewer threads can be faster
    model, tokenizer = load_model(choice)
    torch.manual_seed(args.seed)  # only matters when sampling
    settings = EvalSettings(
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, quality=not args.no_quality,
        timeout_s=args.timeout, progress=not args.no_progress,
    )  # fmt: skip
    report = evaluate_model(model, tokenizer, examples, task, settings)
    name = Path(args.benchmark).stem if args.benchmark.endswith(".jsonl") else args.benchmark
    report = dataclasses.replace(
        report, model=choice.label, benchmark=name, split=split, limit=args.limit,
        settings=report.settings | {"base_model": choice.base.source,
                                    "quantization": choice.base.quantization},
    )  # fmt: skip
    out = args.out or Path(f"eval-{name}-{split}.json")
    return report, report.save(out)
