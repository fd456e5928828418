"""An experiment file: one TOML under ``simulations/`` that names a whole sweep.

An experiment is data (Flower baselines keep one small TOML per experiment under ``conf/``).
It fixes the model, tasks, data, partition, clients, rounds, steps and evaluation limits in
``[base]`` (run-config keys exactly as in ``[tool.flwr.app.config]`` of ``pyproject.toml``),
lists the strategies to compare in ``[[strategies]]`` (a ``label`` plus overrides of the same
keys), and the seeds. Every (strategy, seed) pair is one run; a run's ``seed`` is the
experiment seed, so every strategy sees the identical partition and initial adapter::

    [experiment]
    name = "smoke"              # experiment dir = <output-root>/<name>
    output-root = "experiments" # relative paths resolve against the current directory
    seeds = [0, 1]
    num-clients = 3             # simulated SuperNodes
    cpus-per-client = 1.0       # Ray resources of one simulated client
    gpus-per-client = 0.0       # fractional: 0.25 puts 4 clients on one GPU
    [ray]                       # optional ray.init arguments
    address = ""                # "" = a local Ray instance; "auto" or "ray://head:10001"
    [base]
    "model.source" = "tiny"
    [[strategies]]
    label = "fedavg"
    "adapter.personal" = "none"

Multi-node Ray: start ``ray start --head`` on one machine and ``ray start
--address=<head>:6379`` on the others, then set ``[ray] address = "auto"`` (or export
``RAY_ADDRESS``) and run the experiment on the head. The checkout and ``output-root`` must be
at the same path on every node (a shared filesystem): Flower ships the driver's ``PYTHONPATH``
to the workers, and clients write their private state under the run directory. See
``simulations/README.md``.

Every error is a :class:`ConfigError` naming the bad key, e.g. ``strategies[1].label``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runconfig.fields import ConfigError, build_section, option, require
from runconfig.schema import MAX_NAME, MAX_SEED, RunConfig, parse_run_config

APP_DIR = Path(__file__).resolve().parents[1]
# Keys the runner sets per run: an experiment may not override them.
RUNNER_KEYS = ("seed", "output-dir", "run-name", "resume")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# A label names run directories "<label>-seed<seed>": this leaves the seed's digits room
# within a file name's MAX_NAME characters.
MAX_LABEL = MAX_NAME - len(f"-seed{MAX_SEED}")
# Each client is a simulated SuperNode with its own data partition; more than this is a typo
# or a federation that cannot fit in one machine's memory.
MAX_CLIENTS = 100_000


@dataclass(frozen=True)
class ExperimentSettings:
    name: str = option("", "Experiment name; its directory is <output-root>/<name>.")
    output_root: str = option("experiments", "Directory holding experiment directories.")
    seeds: tuple[int, ...] = option((0,), "A TOML list; every strategy runs once per seed.")
    num_clients: int = option(3, "Simulated SuperNodes (clients) in the federation.")
    cpus_per_client: float = option(1.0, "Ray CPUs reserved by one simulated client.")
    gpus_per_client: float = option(0.0, "Ray GPUs of one client; 0.25 = 4 clients per GPU.")
    description: str = option("", "Free text shown in the report.")
    test_examples: int = option(
        0,
        "Held-out examples per task scored after each run, at its best and final rounds "
        "(simulations.heldout); 0 = none. Needs eval.keep-round-adapters = true.",
    )
    test_batch_size: int = option(8, "Prompts per batch when scoring the held-out examples.")

    def __post_init__(self) -> None:
        require(
            bool(_LABEL.match(self.name)) and len(self.name) <= MAX_NAME,
            "experiment",
            "name",
            self.name,
            f"must be a non-empty name of letters, digits, '_', '.', '+', '-', at most "
            f"{MAX_NAME} characters (it names a directory)",
        )
        require(
            1 <= self.num_clients <= MAX_CLIENTS,
            "experiment",
            "num_clients",
            self.num_clients,
            f"must be between 1 and {MAX_CLIENTS}",
        )
        require(
            self.cpus_per_client > 0,
            "experiment",
            "cpus_per_client",
            self.cpus_per_client,
            "must be > 0",
        )
        require(
            self.gpus_per_client >= 0,
            "experiment",
            "gpus_per_client",
            self.gpus_per_client,
            "must be >= 0",
        )
        require(self.test_examples >= 0, "experiment", "test_examples", self.test_examples, ">= 0")
        require(
            self.test_batch_size >= 1,
            "experiment",
            "test_batch_size",
            self.test_batch_size,
            "must be >= 1",
        )


@dataclass(frozen=True)
class RaySettings:
    """Arguments of ``ray.init``; the empty defaults leave Ray's own choice."""

    address: str = option("", "'' = start a local Ray; 'auto' or 'ray://host:10001' = join one.")
    num_cpus: int = option(0, "CPUs a local Ray may use; 0 = all.")
    num_gpus: int = option(-1, "GPUs a local Ray may use; -1 = detect.")
    object_store_memory: int = option(0, "Bytes of Ray's object store; 0 = Ray's default.")

    def __post_init__(self) -> None:
        require(self.num_cpus >= 0, "ray", "num_cpus", self.num_cpus, "must be >= 0 (0 = all)")
        require(
            self.num_gpus >= -1, "ray", "num_gpus", self.num_gpus, "must be >= 0, or -1 = detect"
        )
        require(
            self.object_store_memory >= 0,
            "ray",
            "object_store_memory",
            self.object_store_memory,
            "must be >= 0 (0 = Ray's default)",
        )

    def init_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "address": self.address or None,
            "num_cpus": self.num_cpus or None,
            "num_gpus": None if self.num_gpus < 0 else self.num_gpus,
            "object_store_memory": self.object_store_memory or None,
        }
        return {k: v for k, v in args.items() if v is not None}


@dataclass(frozen=True)
class StrategySpec:
    """One compared configuration: a label and its run-config overrides."""

    label: str
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class RunSpec:
    """One (strategy, seed) run of an experiment."""

    label: str
    seed: int
    overrides: Mapping[str, Any]  # everything passed to the simulation engine
    run_dir: Path
    num_rounds: int


@dataclass(frozen=True)
class Experiment:
    settings: ExperimentSettings
    ray: RaySettings
    base: Mapping[str, Any]
    strategies: tuple[StrategySpec, ...]
    source_text: str  # the TOML as written, copied into the experiment directory

    def directory(self, output_root: Path | None = None) -> Path:
        root = Path(output_root or self.settings.output_root).expanduser()
        return root.resolve() / self.settings.name

    def runs(self, output_root: Path | None = None) -> list[RunSpec]:
        """Every (strategy, seed) run, strategies in file order, then seeds."""
        runs_dir = self.directory(output_root) / "runs"
        seeds = self.settings.seeds
        return [_run_spec(self, s, seed, runs_dir) for s in self.strategies for seed in seeds]


def run_name(label: str, seed: int) -> str:
    return f"{label}-seed{seed}"


def pyproject_defaults(app_dir: Path = APP_DIR) -> dict[str, Any]:
    """``[tool.flwr.app.config]``: every key a run may override, with its default."""
    data = tomllib.loads((app_dir / "pyproject.toml").read_text())
    return dict(data["tool"]["flwr"]["app"]["config"])


def _run_spec(exp: Experiment, strategy: StrategySpec, seed: int, runs_dir: Path) -> RunSpec:
    name = run_name(strategy.label, seed)
    overrides = {
        **exp.base,
        **strategy.overrides,
        "seed": seed,
        "output-dir": str(runs_dir),
        "run-name": name,
    }
    cfg = resolve(overrides)
    return RunSpec(strategy.label, seed, overrides, runs_dir / name, cfg.run.num_server_rounds)


def resolve(overrides: Mapping[str, Any]) -> RunConfig:
    """The run config Flower would build: pyproject defaults fused with ``overrides``."""
    return parse_run_config({**pyproject_defaults(), **overrides})


def _check_overrides(where: str, values: Mapping[str, Any], known: Mapping[str, Any]) -> None:
    for key in values:
        if key in RUNNER_KEYS:
            raise ConfigError(f"{where}.{key!r}: set by the runner per run; remove it")
        if key not in known:
            raise ConfigError(
                f"{where}.{key!r}: not a run-config key of pyproject.toml "
                "[tool.flwr.app.config] (Flower rejects unknown overrides)"
            )


def _strategy(index: int, table: Any, known: Mapping[str, Any]) -> StrategySpec:
    where = f"strategies[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    values = dict(table)
    label = values.pop("label", None)
    if not isinstance(label, str) or not _LABEL.match(label) or len(label) > MAX_LABEL:
        raise ConfigError(
            f"{where}.label = {label!r}: expected a name of letters, digits, '_', '.', '+', '-', "
            f"at most {MAX_LABEL} characters (it names run directories)"
        )
    _check_overrides(where, values, known)
    return StrategySpec(label, values)


def _seeds(value: Any) -> tuple[int, ...]:
    ok = (
        isinstance(value, list)
        and value
        and all(type(s) is int and 0 <= s <= MAX_SEED for s in value)  # bool is not a seed
    )
    require(
        bool(ok),
        "experiment",
        "seeds",
        value,
        f"expected a non-empty list of integers between 0 and {MAX_SEED}",
    )
    require(len(set(value)) == len(value), "experiment", "seeds", value, "seeds must be distinct")
    return tuple(value)


def _table(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}]: expected a table")
    return dict(value)


def parse_experiment(text: str) -> Experiment:
    """Parse and check an experiment TOML; raises :class:`ConfigError` naming the bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"experiment file is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"experiment", "ray", "base", "strategies"})
    if unknown:
        raise ConfigError(f"unknown table [{unknown[0]}]; valid: experiment, ray, base, strategies")
    section = _table(data, "experiment")
    seeds = _seeds(section.pop("seeds", None))
    settings = build_section(ExperimentSettings, "experiment", section)  # seeds: a TOML list,
    settings = dataclasses.replace(settings, seeds=seeds)  # which build_section does not parse
    known = pyproject_defaults()
    base = _table(data, "base")
    _check_overrides("base", base, known)
    tables = data.get("strategies")
    if not isinstance(tables, list) or not tables:
        raise ConfigError("strategies: expected at least one [[strategies]] table")
    strategies = tuple(_strategy(i, t, known) for i, t in enumerate(tables))
    _check_values(base, strategies)
    if settings.test_examples:
        _check_round_adapters(base, strategies)
    ray = build_section(RaySettings, "ray", _table(data, "ray"))
    return Experiment(settings, ray, base, strategies, text)


def _check_values(base: Mapping[str, Any], strategies: tuple[StrategySpec, ...]) -> None:
    """Unique labels; types and ranges of the shared overrides, then of each strategy's."""
    # Labels name run directories, and on a case-insensitive file system (macOS, Windows)
    # "FedAvg" and "fedavg" are one directory: two strategies would resume each other's runs.
    folded = [s.label.casefold() for s in strategies]
    for i, label in enumerate(folded):
        if label in folded[:i]:
            first = strategies[folded.index(label)].label
            raise ConfigError(
                f"strategies[{i}].label = {strategies[i].label!r}: duplicate label "
                f"(of {first!r}, ignoring case: labels name run directories)"
            )
    try:
        resolve(base)
    except ConfigError as exc:
        raise ConfigError(f"base: {exc}") from exc
    for i, spec in enumerate(strategies):
        try:
            resolve({**base, **spec.overrides})
        except ConfigError as exc:
            raise ConfigError(f"strategies[{i}] ({spec.label}): {exc}") from exc


def _check_round_adapters(base: Mapping[str, Any], strategies: tuple[StrategySpec, ...]) -> None:
    """Held-out scoring loads each reported round's client adapters, which runs keep only with
    eval.keep-round-adapters."""
    for i, spec in enumerate(strategies):
        if not resolve({**base, **spec.overrides}).eval.keep_round_adapters:
            raise ConfigError(
                f"strategies[{i}] ({spec.label}): experiment.test-examples > 0 needs "
                "eval.keep-round-adapters = true"
            )


def load_experiment(path: Path) -> Experiment:
    """Read and parse an experiment file; an unreadable one is a :class:`ConfigError` too."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"experiment file {path}: cannot read it ({exc})") from exc
    return parse_experiment(text)
