"""Held-out test metrics of a finished run, at its best round and at its final round.

Issue 11 asks for the task metrics (pass@1, BLEU-4/CodeBLEU, smoothed BLEU-4/ROUGE-L) and the
loss on held-out data, at the final round and at each run's best round, the best round being
chosen on a *separate* validation slice, never on the reported data. Generation is the cost
on a CPU, so it runs only at those (at most two) rounds, after the run:

1. The run evaluates every round on each client's local validation slice (``eval-loss`` in
   ``metrics.jsonl``) and, with ``eval.keep-round-adapters``, keeps each client's exported
   adapter of every round.
2. :func:`best_round` picks the round of the lowest validation loss (mean over tasks);
   :func:`test_sets` draws each task's held-out examples from data no client holds.
3. Each reported round's client adapters are loaded with plain PEFT
   (``PeftModel.from_pretrained``, as a user would) and scored on their tasks' test examples;
   the clients holding a task share its examples (round-robin), so every task is scored on
   ``[experiment] test-examples`` examples in all, by the personalised models.

The result goes to ``<run dir>/test_metrics.json``; then the round adapters not reported are
deleted (they are 10 MB each for the bundled model).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from client.data import client_examples, client_identity
from codetasks.data.jsonl import read_json_object
from codetasks.examples import Example
from codetasks.loading import load_task
from colora.contract import CLIENT_ID, EVAL_LOSS_TASK
from runconfig.schema import RunConfig
from simulations.results import json_float, read_records

log = logging.getLogger(__name__)

TEST_FILE = "test_metrics.json"
TEST_LOSS = "test-loss"
REPORTED = ("best", "final")  # the rounds reported, as named in test_metrics.json


def round_loss(record: Mapping[str, Any]) -> float:
    """The validation loss of one round line: the mean of its per-task eval losses."""
    losses = list(record.get("eval_loss_by_task", {}).values())
    return sum(losses) / len(losses) if losses else math.nan


def best_round(records: Sequence[Mapping[str, Any]]) -> int:
    """The round of the lowest validation loss (the earliest on a tie); failed rounds and
    rounds without a loss are skipped."""
    scored = [(round_loss(r), r["round"]) for r in records if not r.get("failed")]
    scored = [(loss, rnd) for loss, rnd in scored if not math.isnan(loss)]
    if not scored:
        raise ValueError("no round reports a validation loss")
    return min(scored)[1]


def client_tasks(record: Mapping[str, Any]) -> dict[int, list[str]]:
    """Client id -> the tasks it reported a validation loss for in this round line."""
    out: dict[int, list[str]] = {}
    for entry in record.get("eval", []):
        tasks = sorted(
            k.removeprefix(EVAL_LOSS_TASK) for k in entry if k.startswith(EVAL_LOSS_TASK)
        )
        if tasks:
            out[int(entry[CLIENT_ID])] = tasks
    return out


def _pool(cfg: RunConfig, task: str, data_root: Path) -> list[Example]:
    """Where a task's held-out examples come from: its test split if it is available offline,
    else its validation then its training split (whatever no client holds of them)."""
    source = cfg.data.source_for(task)
    try:
        return load_task(task, "test", data_root=data_root, source=source)
    except (ValueError, OSError):
        valid = load_task(task, "valid", data_root=data_root, source=source)
        return valid + load_task(task, "train", data_root=data_root, source=source)


def held_uids(cfg: RunConfig, num_clients: int) -> set[str]:
    """Every example some client trains or validates on (by ``uid``)."""
    held: set[str] = set()
    for partition in range(num_clients):
        node = {"partition-id": partition, "num-partitions": num_clients}
        train, valid = client_examples(cfg, client_identity(node, cfg))
        held |= {e.uid for part in (train, valid) for examples in part.values() for e in examples}
    return held


def test_sets(
    cfg: RunConfig, num_clients: int, tasks: Sequence[str], size: int
) -> dict[str, list[Example]]:
    """``size`` held-out examples per task, none of them held by any client; raises if a task
    has fewer."""
    held, root = held_uids(cfg, num_clients), cfg.data_root()
    out = {}
    for task in tasks:
        unseen = list({e.uid: e for e in _pool(cfg, task, root) if e.uid not in held}.values())
        if len(unseen) < size:
            raise ValueError(f"{task}: only {len(unseen)} held-out examples, {size} wanted")
        out[task] = unseen[:size]
    return out


def assignments(
    holders: Mapping[int, Sequence[str]], tests: Mapping[str, Sequence[Example]]
) -> dict[int, dict[str, list[Example]]]:
    """Each task's test examples dealt round-robin to the clients holding it (by client id),
    so the task is scored on all of them exactly once."""
    out: dict[int, dict[str, list[Example]]] = defaultdict(dict)
    for task, examples in tests.items():
        owners = sorted(cid for cid, tasks in holders.items() if task in tasks)
        for j, cid in enumerate(owners):
            out[cid][task] = list(examples[j :: len(owners)])
    return dict(out)


def combine(scores: Sequence[tuple[int, Mapping[str, float]]]) -> dict[str, float]:
    """Per metric, the mean over clients weighted by how many examples each scored."""
    total: dict[str, float] = defaultdict(float)
    weight: dict[str, int] = defaultdict(int)
    for n, metrics in scores:
        for name, value in metrics.items():
            total[name] += n * value
            weight[name] += n
    return {name: total[name] / weight[name] for name in sorted(total) if weight[name]}


def reported_rounds(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    ok = [r for r in records if not r.get("failed")]
    return {"best": best_round(records), "final": ok[-1]["round"]}


def prune_round_adapters(run_dir: Path, keep: set[int]) -> None:
    """Delete the kept round adapters of rounds that are not reported."""
    for path in Path(run_dir).glob("clients/client-*/rounds/round-*"):
        if int(path.name.removeprefix("round-")) not in keep:
            shutil.rmtree(path, ignore_errors=True)


def write_test_metrics(run_dir: Path, payload: Mapping[str, Any]) -> Path:
    path = Path(run_dir) / TEST_FILE
    tmp = path.with_name(f".{TEST_FILE}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_test_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's parsed :data:`TEST_FILE`, or None if it has none that is well formed
    (:func:`_well_formed`): the run then counts as not scored, and the runner scores it again,
    replacing the file, rather than a report stopping on it."""
    path = Path(run_dir) / TEST_FILE
    try:
        found = read_json_object(path) if path.exists() else None
    except (OSError, ValueError) as error:  # DataError is a ValueError and names the file
        log.warning("%s; the run counts as not scored", error)
        return None
    if found is not None and not _well_formed(found):
        log.warning("%s: not {reported: {round: {task: {metric: number}}}}; ignored", path)
        return None
    return found


def _well_formed(found: Any) -> bool:
    """``found["reported"]`` maps each of :data:`REPORTED` it has to task -> metric -> number."""
    reported = found.get("reported", {}) if isinstance(found, dict) else None
    if not isinstance(reported, dict):
        return False
    tasks = [reported[kind] for kind in REPORTED if kind in reported]
    return all(
        isinstance(by_task, dict)
        and all(
            isinstance(metrics, dict) and all(json_float(v) is not None for v in metrics.values())
            for metrics in by_task.values()
        )
        for by_task in tasks
    )


def score_adapter(
    cfg: RunConfig, adapter_dir: Path, examples: Mapping[str, Sequence[Example]], batch_size: int
) -> dict[str, tuple[int, dict[str, float]]]:
    """Task -> (examples, metrics) of one exported client adapter, loaded with plain PEFT on
    the run's base model: the test loss, then the task metrics of greedy generations."""
    from client.batching import encode_all, eval_batches
    from client.train import evaluate_loss
    from colora.evaluate import EvalSettings, ModelChoice, evaluate_model, load_model

    model, tokenizer = load_model(ModelChoice(str(adapter_dir), cfg.model, Path(adapter_dir)))
    settings = EvalSettings(
        batch_size=batch_size, max_new_tokens=cfg.eval.max_new_tokens or None, quality=False
    )
    out = {}
    for task, chosen in sorted(examples.items()):
        encoded = encode_all(tokenizer, chosen, cfg.train.max_seq_length)
        losses = evaluate_loss(model, eval_batches(encoded, batch_size, tokenizer.pad_token_id))
        report = evaluate_model(model, tokenizer, chosen, task, settings)
        # Examples whose prompt does not fit train.max-seq-length have no loss (as in
        # validation); a client left with none reports no test loss for the task.
        loss = {TEST_LOSS: losses[task]} if task in losses else {}
        out[task] = (len(chosen), {**loss, **report.metrics})
        log.info("%s %s on %d: %s", adapter_dir, task, len(chosen), out[task][1])
    return out


def evaluate_run(run_dir: Path, cfg: RunConfig, num_clients: int, size: int, batch_size: int):
    """Score the run's best and final rounds on held-out data; writes :data:`TEST_FILE`."""
    records = read_records(Path(run_dir) / "metrics.jsonl")
    rounds = reported_rounds(records)
    holders = client_tasks(next(r for r in records if r["round"] == rounds["final"]))
    tests = test_sets(cfg, num_clients, sorted({t for ts in holders.values() for t in ts}), size)
    dealt = assignments(holders, tests)
    scored: dict[int, dict] = {}
    reported: dict[str, dict[str, dict[str, float]]] = {}
    for kind, rnd in rounds.items():
        if rnd not in scored:
            per_task: dict[str, list] = defaultdict(list)
            for cid, examples in sorted(dealt.items()):
                adapter = (
                    Path(run_dir) / "clients" / f"client-{cid}" / "rounds" / f"round-{rnd:03d}"
                )
                for task, result in score_adapter(cfg, adapter, examples, batch_size).items():
                    per_task[task].append(result)
            scored[rnd] = {task: combine(results) for task, results in per_task.items()}
        reported[kind] = scored[rnd]
    payload = {
        "rounds": rounds,
        "selection": "lowest mean validation eval-loss over tasks (clients' validation slices)",
        "test_examples": {task: len(examples) for task, examples in tests.items()},
        "validation_loss": {str(r["round"]): round_loss(r) for r in records if not r.get("failed")},
        "reported": reported,
    }
    path = write_test_metrics(run_dir, payload)
    prune_round_adapters(run_dir, set(rounds.values()))
    return path
