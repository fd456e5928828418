"""Command line of experiment sweeps and reports.

python -m simulations run simulations/smoke.toml [--only LABEL ...] [--seed N ...] [--dry-run]
                                                 [--output-root DIR]
python -m simulations report experiments/smoke
python -m simulations readme simulations/results/<name>.json [--readme README.md]
python -m simulations run-one <run dir>/run_spec.json   # used by ``run``, one run
python -m simulations test-one <run dir>                # used by ``run``, held-out metrics
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from runconfig.fields import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment's pending runs")
    run.add_argument("experiment", type=Path, help="experiment TOML file")
    run.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="LABEL",
        help="run only this strategy label (repeatable)",
    )
    run.add_argument(
        "--seed",
        action="append",
        default=[],
        type=int,
        metavar="SEED",
        help="run only this seed (repeatable)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    run.add_argument("--output-root", type=Path, help="replaces [experiment] output-root")
    report = commands.add_parser("report", help="write report.md and index.html")
    report.add_argument("experiment_dir", type=Path)
    one = commands.add_parser("run-one", help="run one planned run (internal)")
    one.add_argument("spec", type=Path)
    test = commands.add_parser("test-one", help="score a finished run on held-out data (internal)")
    test.add_argument("run_dir", type=Path)
    readme = commands.add_parser("readme", help="write the README results block of a summary")
    readme.add_argument("summary", type=Path, help="simulations/results/<experiment>.json")
    readme.add_argument("--readme", type=Path, default=None, help="README to update in place")
    return parser


def _write(args: argparse.Namespace) -> object:
    """The ``readme`` block or the ``report`` page's path, once written."""
    if args.command == "readme":
        from simulations.readme import write_readme_block

        return write_readme_block(args.summary, args.readme)
    from simulations.report import write_report

    return write_report(args.experiment_dir)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run-one":
        from simulations.runner import run_one

        run_one(args.spec)
        return 0
    if args.command == "test-one":
        from simulations.runner import test_one

        test_one(args.run_dir)
        return 0
    if args.command in ("readme", "report"):
        try:
            print(_write(args))
        except (OSError, ValueError) as exc:  # a missing or malformed file; names it
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    from simulations.experiment import load_experiment
    from simulations.runner import run_experiment

    # A background runner ignores SIGINT (the shell's rule for background jobs); SIGTERM then
    # stops the current run cleanly (its process group too), as Ctrl-C does, so it resumes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    try:
        exp = load_experiment(args.experiment)
        failed = run_experiment(exp, args.output_root, args.only, args.dry_run, args.seed)
    except (ConfigError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if failed:
        print(f"{failed} run(s) failed; see run.log in their run directories", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
