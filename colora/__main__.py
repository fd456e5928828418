"""Command line of the model evaluation: ``python -m colora evaluate``.

python -m colora evaluate --model base --benchmark humaneval --limit 40
python -m colora evaluate --model runs/default --shared --benchmark mbpp

It lives here and not in :mod:`codetasks` because it loads models (issue 15: codetasks sits
below colora and imports no model code); :mod:`colora.evaluate` is the library it drives.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from codetasks.data.jsonl import read_json_object
from codetasks.examples import TASK_NAMES, Example
from codetasks.loading import DEFAULT_DATA_ROOT, SPLIT_NAMES, load_task
from colora.evaluate import EvalReport, EvalSettings, ModelChoice, evaluate_model, load_model
from runconfig.schema import ModelSettings

# Named benchmarks: (task, load_task source, default split).
BENCHMARKS: dict[str, tuple[str, str, str]] = {
    "mbpp": ("generation", "", "valid"),
    "humaneval": ("generation", "humaneval", "test"),
    "codexglue": ("translation", "", "valid"),
    "mined": ("summarization", "", "valid"),
}


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
        config = read_json_object(path / "adapter_config.json")
        recorded = _text(config, "base_model_name_or_path")
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
    config = read_json_object(run_dir / "config.json")
    base = ModelSettings(base_model or _text(config, "model.source") or "bundled",
                         quantization or _text(config, "model.quantization") or "nf4",
                         _text(config, "model.cache-dir"))  # fmt: skip
    return ModelChoice(f"{run_dir}:{adapter.relative_to(run_dir)}", base, adapter)


def _text(config: dict[str, Any], key: str) -> str:
    """``config[key]`` when it is a string, else "" (the caller's default applies)."""
    value = config.get(key)
    return value if isinstance(value, str) else ""


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


def report_path(
    out: Path | None, name: str, split: str, *, data_root: Path, overwrite: bool = False
) -> Path:
    """Where the report goes, ``out`` or ``eval-<benchmark>-<split>.json``, checked before the
    evaluation (minutes to hours) so that a bad path costs nothing: never a directory, never
    inside the data root, and never an existing file unless ``overwrite``."""
    path = out or Path(f"eval-{name}-{split}.json")
    if path.is_dir():
        raise IsADirectoryError(f"report path {path} is a directory; name a file")
    if path.resolve().is_relative_to(data_root.resolve()):
        raise ValueError(
            f"report path {path} is inside the data root {data_root}; write it elsewhere"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"report {path} exists; pass --overwrite to replace it")
    return path


def run_evaluate(args) -> tuple[EvalReport, Path]:
    """The ``evaluate`` subcommand: resolve, load, evaluate, and write the JSON report."""
    task, split, examples = load_benchmark(
        args.benchmark, args.task, args.split, data_root=args.data_root, limit=args.limit
    )
    name = Path(args.benchmark).stem if args.benchmark.endswith(".jsonl") else args.benchmark
    out = report_path(args.out, name, split, data_root=args.data_root, overwrite=args.overwrite)
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
    report = dataclasses.replace(
        report, model=choice.label, benchmark=name, split=split, limit=args.limit,
        settings=report.settings | {"base_model": choice.base.source,
                                    "quantization": choice.base.quantization},
    )  # fmt: skip
    return report, report.save(out)


def build_parser() -> argparse.ArgumentParser:
    """The ``evaluate`` subcommand."""
    parser = argparse.ArgumentParser(prog="python -m colora", description=__doc__)
    _add_evaluate(parser.add_subparsers(dest="command", required=True))
    return parser


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    ev = commands.add_parser("evaluate", help="evaluate a model on a benchmark, write JSON")
    ev.add_argument("--model", required=True, help="'base', an adapter dir, or a run dir")
    who = ev.add_mutually_exclusive_group()
    who.add_argument("--client", type=int, default=None, help="run dir: this client's adapter")
    who.add_argument("--shared", action="store_true", help="run dir: the shared adapter")
    ev.add_argument("--task", choices=TASK_NAMES, default=None, help="default: the benchmark's")
    ev.add_argument("--benchmark", required=True, help=f"{', '.join(BENCHMARKS)} or a .jsonl")
    ev.add_argument("--split", choices=SPLIT_NAMES, default=None, help="default: valid/test")
    ev.add_argument("--limit", type=int, default=None, help="first N examples")
    ev.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="offline data")
    ev.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    ev.add_argument("--max-new-tokens", type=int, default=None, help="default: per task")
    ev.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ev.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed")
    ev.add_argument("--base-model", default=None, help="bundled, tiny, a path or a hub ID")
    ev.add_argument("--quantization", choices=("nf4", "none"), default=None, help="base model")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ev.add_argument("--timeout", type=float, default=10.0, help="seconds per sandboxed program")
    ev.add_argument("--no-quality", action="store_true", help="skip pylint/flake8/lizard")
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ev.add_argument("--out", type=Path, default=None, help="report path (JSON)")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing report")


def evaluate_summary(report: EvalReport, path: Path) -> str:
    """A few lines for the terminal: the metrics, the timings and where the report went."""
    lines = [f"{report.model} on {report.benchmark}/{report.split} ({report.task}), n={report.n}"]
    lines += [f"  {name:<28} {value:10.3f}" for name, value in report.metrics.items()]
    seconds, speed = report.seconds, report.tokens_per_second
    lines.append(f"  generation {seconds['generation']:.1f} s ({speed:.1f} new tokens/s), "
                 f"scoring {seconds['scoring']:.1f} s\nreport: {path}")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate and print a summary of the report; bad input prints one line and exits 2."""
    args = build_parser().parse_args(argv)
    try:
        print(evaluate_summary(*run_evaluate(args)))
    # Bad data (DataError is a ValueError), a bad model or report path: one line, no traceback.
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
