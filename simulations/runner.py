"""Run every (strategy, seed) of an experiment through Flower's simulation engine, resumably.

``python -m simulations run simulations/<file>.toml`` copies the file into the experiment
directory and runs each pending run in a fresh subprocess (``python -m simulations run-one``),
one after another, so Ray state and memory never leak from one run into the next. Before a run
the runner decides from its directory what to do (:func:`run_state`):

- ``done``: ``metrics.jsonl`` reaches ``num-server-rounds`` and the final adapter exists: skip;
- ``resume``: a checkpoint exists: continue after its round (``resume=true``);
- ``restart``: something was written but no round was checkpointed: delete and start over,
  so no stale client state (Sigma_k) leaks into the fresh run;
- ``fresh``: nothing there yet.

While a run executes, a progress bar follows its rounds, TensorBoard scalars are written, and
the wall time and peak memory of its process tree (the run process and Ray's workers) go to
``run_summary.json`` after every round. Output of the run goes to ``<run dir>/run.log``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from codetasks.data.jsonl import read_json_object
from runconfig.fields import ConfigError
from server import run_dir as rundir
from server.round_record import read_records
from server.tensorboard import sync_run
from simulations import heldout, summary
from simulations.experiment import APP_DIR, Experiment, RunSpec
from simulations.monitor import MemorySampler, RoundTail

DONE, RESUME, RESTART, FRESH = "done", "resume", "restart", "fresh"
SPEC_FILE = "run_spec.json"
EXPERIMENT_COPY = "experiment.toml"


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    state: str
    rounds_done: int


def checkpoint_round(run_dir: Path) -> int | None:
    """The round of the run's last valid checkpoint (see ``server.run_dir``), or None."""
    return rundir.checkpoint_round(run_dir)


def run_state(run: RunSpec) -> tuple[str, int]:
    """``(state, rounds in metrics.jsonl)``; states as in the module docstring."""
    rounds = max((r["round"] for r in read_records(run.run_dir / "metrics.jsonl")), default=0)
    final = (run.run_dir / "shared_adapter" / "adapter_config.json").exists()
    if rounds >= run.num_rounds and final:
        return DONE, rounds
    if checkpoint_round(run.run_dir) is not None:
        return RESUME, rounds
    if run.run_dir.exists() and any(run.run_dir.iterdir()):
        return RESTART, rounds
    return FRESH, rounds


def plan(
    exp: Experiment,
    output_root: Path | None = None,
    only: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> list[PlannedRun]:
    """The runs to consider, in file order; ``only`` and ``seeds`` (``--only``, ``--seed``)
    narrow them, so seed 0 of every strategy can finish before any seed 1 starts."""
    labels = {s.label for s in exp.strategies}
    for label in only:
        if label not in labels:
            raise ConfigError(
                f"--only {label!r}: no such strategy label; valid: {', '.join(sorted(labels))}"
            )
    for seed in seeds:
        if seed not in exp.settings.seeds:
            raise ConfigError(
                f"--seed {seed}: not a seed of this experiment; valid: "
                f"{', '.join(map(str, exp.settings.seeds))}"
            )
    runs = [
        r
        for r in exp.runs(output_root)
        if (not only or r.label in only) and (not seeds or r.seed in seeds)
    ]
    return [PlannedRun(r, *run_state(r)) for r in runs]


def check_strategy_names(exp: Experiment) -> None:
    """Fail before any run starts if a strategy name is not registered."""
    from strategies.registry import STRATEGIES

    for i, spec in enumerate(exp.strategies):
        name = spec.overrides.get("strategy.name", exp.base.get("strategy.name", "fedavg"))
        if name not in STRATEGIES:
            raise ConfigError(
                f"strategies[{i}] ({spec.label}): strategy.name = {name!r}: unknown "
                f"strategy; valid: {', '.join(sorted(STRATEGIES))}"
            )


def check_resources(exp: Experiment, cpus: int | None = None) -> None:
    """Fail before any run starts if a local Ray could not host one client: each run would
    start Ray, load nothing and fail on Flower's "ActorPool is empty". ``cpus`` defaults to
    the CPUs this process may use (``ray.num-cpus`` caps it). A Ray cluster that is joined
    (``ray.address``) has resources this machine cannot see, and is not checked."""
    if exp.ray.address:
        return
    have = exp.ray.num_cpus or cpus or len(os.sched_getaffinity(0))
    want = exp.settings.cpus_per_client
    if want > have:
        raise ConfigError(
            f"experiment.cpus-per-client = {want}: more than the {have} CPUs a local Ray has "
            "here (ray.num-cpus, else this machine's); no client could start"
        )
    if exp.settings.gpus_per_client > 0 and exp.ray.num_gpus == 0:
        raise ConfigError(
            f"experiment.gpus-per-client = {exp.settings.gpus_per_client}: ray.num-gpus = 0 "
            "gives a local Ray no GPU; no client could start"
        )


_PLACE_KEYS = ("output-dir", "resume")  # where a run lives and how it started, not what it is


def _what_ran(overrides: dict[str, Any], num_clients: int) -> dict[str, Any]:
    return {**{k: v for k, v in overrides.items() if k not in _PLACE_KEYS}, "clients": num_clients}


def conflicts(exp: Experiment, output_root: Path | None = None) -> list[str]:
    """Runs on disk whose ``run_spec.json`` differs from what ``exp`` would run now.

    Adding seeds or strategies to an experiment file is fine; changing what an existing run
    is (its overrides or the number of clients) is not: its results would be mislabelled.
    """
    found = []
    for run in exp.runs(output_root):
        spec = run.run_dir / SPEC_FILE
        if not spec.exists():
            continue
        try:
            old = read_json_object(spec)
            before = _what_ran(dict(old["overrides"]), int(old["num_supernodes"]))
        except (OSError, ValueError, KeyError, TypeError) as error:  # DataError: ValueError
            # What that run is cannot be told: refuse rather than resume or overwrite it.
            found.append(f"{run.run_dir.name} ({SPEC_FILE} unreadable: {error!r:.80})")
            continue
        now = _what_ran(dict(run.overrides), exp.settings.num_clients)
        keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if keys:
            found.append(f"{run.run_dir.name} ({', '.join(keys)})")
    return found


def prepare_directory(exp: Experiment, output_root: Path | None = None) -> None:
    """Create the experiment directory and copy the experiment file into it; refuse if runs
    already there were made with other settings."""
    changed = conflicts(exp, output_root)
    if changed:
        raise FileExistsError(
            f"runs made with other settings than this file: {'; '.join(changed)}. Use a new "
            "[experiment] name, or delete those run directories"
        )
    exp_dir = exp.directory(output_root)
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / EXPERIMENT_COPY).write_text(exp.source_text)


def _spec_payload(exp: Experiment, planned: PlannedRun) -> dict[str, Any]:
    overrides = {**planned.spec.overrides, "resume": planned.state == RESUME}
    return {
        "label": planned.spec.label,
        "seed": planned.spec.seed,
        "overrides": overrides,
        "num_supernodes": exp.settings.num_clients,
        "cpus_per_client": exp.settings.cpus_per_client,
        "gpus_per_client": exp.settings.gpus_per_client,
        "ray_init_args": exp.ray.init_args(),
    }


def _stop_tree(proc: subprocess.Popen) -> None:
    """SIGINT, SIGTERM, then SIGKILL to the run's process group (it has its own session);
    Ray's processes notice that their driver died and exit."""
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def _launch(run_dir: Path) -> subprocess.Popen:
    """``python -m simulations run-one`` in its own session, output appended to run.log."""
    with open(run_dir / "run.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "simulations", "run-one", str(run_dir / SPEC_FILE)],
            cwd=APP_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops the run cleanly
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def execute(exp: Experiment, planned: PlannedRun, bar: tqdm | None = None) -> int:
    """Run one planned run in a subprocess while watching it; returns its exit code."""
    run_dir = planned.spec.run_dir
    if planned.state == RESTART:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = _spec_payload(exp, planned)
    (run_dir / SPEC_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
    resumed_after = (checkpoint_round(run_dir) or 0) if planned.state == RESUME else 0
    record = summary.start(run_dir, payload, resumed_after, host_info())
    start = time.perf_counter()
    proc = _launch(run_dir)
    sampler = MemorySampler(proc.pid)

    def on_round(line: dict[str, Any]) -> None:
        summary.add_round(record, line, sampler.take_window(), time.perf_counter() - start)
        summary.write(run_dir, record)
        sync_run(run_dir)
        if bar is not None:
            bar.n = int(line["round"])
            bar.refresh()

    tail = RoundTail(run_dir, on_round)
    sampler.start()
    tail.start()
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _stop_tree(proc)
        raise
    finally:
        tail.stop()
        sampler.stop()
        summary.finish(record, proc.returncode, time.perf_counter() - start, sampler)
        summary.write(run_dir, record)


def host_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _test_if_needed(exp: Experiment, run: RunSpec) -> int:
    """Score a finished run on held-out data unless done; 1 if that failed, else 0."""
    if not needs_test(exp, run):
        return 0
    code = execute_test(run)
    tqdm.write(f"{run.run_dir.name}: held-out metrics {'written' if code == 0 else 'FAILED'}")
    return int(code != 0)


def _describe(planned: PlannedRun) -> str:
    spec = planned.spec
    return (
        f"{spec.label:<24} seed {spec.seed:<4} {planned.state:<8} "
        f"rounds {planned.rounds_done}/{spec.num_rounds}  {spec.run_dir}"
    )


def run_experiment(
    exp: Experiment,
    output_root: Path | None = None,
    only: Sequence[str] = (),
    dry_run: bool = False,
    seeds: Sequence[int] = (),
) -> int:
    """Run what is pending; returns the number of runs that failed."""
    exp_dir = exp.directory(output_root)
    planned = plan(exp, output_root, only, seeds)
    if dry_run:
        print(f"experiment {exp.settings.name} -> {exp_dir}")
        print("\n".join(_describe(p) for p in planned))
        return 0
    check_strategy_names(exp)
    check_resources(exp)
    prepare_directory(exp, output_root)
    failed = 0
    runs_bar = tqdm(total=len(planned), desc="runs", unit="run", position=0)
    for item in planned:
        if item.state == DONE:
            failed += _test_if_needed(exp, item.spec)
            runs_bar.update(1)
            continue
        name = item.spec.run_dir.name
        rounds_bar = tqdm(
            total=item.spec.num_rounds,
            desc=name,
            unit="round",
            position=1,
            initial=checkpoint_round(item.spec.run_dir) or 0,
            leave=False,
        )
        code = execute(exp, item, rounds_bar)
        rounds_bar.close()
        failed += code != 0
        tqdm.write(summary.one_line(item.spec.run_dir, code))
        if code == 0:
            failed += _test_if_needed(exp, item.spec)
        runs_bar.update(1)
    runs_bar.close()
    return failed


def needs_test(exp: Experiment, run: RunSpec) -> bool:
    """Whether a finished run still lacks its held-out metrics (``[experiment] test-examples``)."""
    return exp.settings.test_examples > 0 and heldout.read_test_metrics(run.run_dir) is None


def execute_test(run: RunSpec) -> int:
    """Score a finished run on held-out data in a subprocess (output appended to run.log)."""
    with open(run.run_dir / "run.log", "a") as log:
        return subprocess.call(
            [sys.executable, "-m", "simulations", "test-one", str(run.run_dir)],
            cwd=APP_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def test_one(run_dir: Path) -> None:
    """The body of ``test-one``: :func:`simulations.heldout.evaluate_run` for one run."""
    from simulations.experiment import load_experiment, resolve

    payload = json.loads((run_dir / SPEC_FILE).read_text())
    exp = load_experiment(run_dir.parent.parent / EXPERIMENT_COPY)
    heldout.evaluate_run(
        run_dir,
        resolve(payload["overrides"]),
        payload["num_supernodes"],
        exp.settings.test_examples,
        exp.settings.test_batch_size,
    )


def run_one(spec_file: Path) -> None:
    """The body of one run's subprocess: the whole federation in Flower's simulation engine."""
    from simulations.engine import simulate

    payload = json.loads(Path(spec_file).read_text())
    simulate(
        payload["overrides"],
        num_supernodes=payload["num_supernodes"],
        cpus_per_client=payload["cpus_per_client"],
        gpus_per_client=payload["gpus_per_client"],
        ray_init_args=payload["ray_init_args"],
    )
