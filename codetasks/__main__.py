"""Command line for the code tasks: inspect client partitions and summarization mining.

python -m codetasks partition --clients 6 --scheme by-task --seed 0
python -m codetasks mine-summaries [--source-dir DIR]
(the model evaluation is ``python -m colora evaluate``: it loads models, which codetasks does not)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from codetasks.data.summarization import mine_summarization_pairs
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
    """The ``partition`` and ``mine-summaries`` subcommands."""
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
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and print its result; bad data or arguments print one line and
    exit 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "partition":
            print(run_partition(args))
        else:
            print(mine_summarization_pairs(args.source_dir, cache=not args.no_cache).report())
    # DataError is a ValueError; OSError covers a missing or unreadable source directory.
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
