"""Command line for the code tasks: inspect client partitions and summarization mining.

python -m codetasks partition --clients 6 --scheme by-task --seed 0
python -m codetasks mine-summaries [--source-dir DIR]
python -m codetasks evaluate --model base --benchmark humaneval --limit 40
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from codetasks.data.summarization import mine_summarization_pairs
from codetasks.evaluate import BENCHMARKS, EvalReport, run_evaluate
from codetasks.examples import TASK_NAMES
from codetasks.loading import DEFAULT_DATA_ROOT, SPLIT_NAMES, load_task
from codetasks.partition import SCHEMES, partition_clients, partition_summary


def _tasks(text: str) -> list[str]:
    tasks = [task.strip() for task in text.split(",") if task.strip()]
    unknown = [task for task in tasks if task not in TASK_NAMES]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(f"tasks must be among {', '.join(TASK_NAMES)}")
    return tasks


def build_parser() -> argparse.ArgumentParser:
    """The ``partition``, ``mine-summaries`` and ``evaluate`` subcommands."""
    parser = argparse.ArgumentParser(prog="python -m codetasks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    part = commands.add_parser("partition", help="print the examples per client and task")
    part.add_argument("--clients", type=int, required=True, help="number of clients")
    part.add_argument("--scheme", choices=SCHEMES, default="by-task", help="partition scheme")
    part.add_argument("--seed", type=int, default=0, help="partition seed")
    part.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    part.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="offline data")
    part.add_argument("--split", choices=SPLIT_NAMES, default="train", help="split to partition")
    part.add_argument("--tasks", type=_tasks, default=list(TASK_NAMES), help="comma-separated")
    part.add_argument("--limit-per-task", type=int, default=None, help="first N per task")
    mine = commands.add_parser("mine-summaries", help="print summarization mining counts")
    mine.add_argument("--source-dir", type=Path, default=None, help="default: the stdlib")
    mine.add_argument("--no-cache", action="store_true", help="mine again, ignoring the cache")
    _add_evaluate(commands)
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


def run_partition(args: argparse.Namespace) -> str:
    """Load each task's split and return the partition table."""
    examples = {
        task: load_task(task, args.split, data_root=args.data_root, limit=args.limit_per_task)
        for task in args.tasks
    }
    partitions = partition_clients(
        examples, args.clients, args.scheme, seed=args.seed, alpha=args.alpha
    )
    return partition_summary(partitions)


def evaluate_summary(report: EvalReport, path: Path) -> str:
    """A few lines for the terminal: the metrics, the timings and where the report went."""
    lines = [f"{report.model} on {report.benchmark}/{report.split} ({report.task}), n={report.n}"]
    lines += [f"  {name:<28} {value:10.3f}" for name, value in report.metrics.items()]
    seconds, speed = report.seconds, report.tokens_per_second
    lines.append(f"  generation {seconds['generation']:.1f} s ({speed:.1f} new tokens/s), "
                 f"scoring {seconds['scoring']:.1f} s\nreport: {path}")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and print its result."""
    args = build_parser().parse_args(argv)
    if args.command == "partition":
        print(run_partition(args))
    elif args.command == "evaluate":
        print(evaluate_summary(*run_evaluate(args)))
    else:
        print(mine_summarization_pairs(args.source_dir, cache=not args.no_cache).report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
