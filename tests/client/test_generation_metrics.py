"""Generation metrics inside a federated client: the evaluation issue's metrics, reported as
``eval.<task>.<metric>`` on the client's local validation split (tiny model, real data)."""

from __future__ import annotations

import pytest

from client.rounds import generation_metrics
from client.runtime import client_data, model_runtime
from runconfig import parse_run_config
from tests.conftest import pyproject_defaults


@pytest.mark.parametrize(
    ("partition", "task", "metric"),
    [(0, "generation", "pass@1"), (1, "translation", "codebleu"), (2, "summarization", "rouge_l")],
)
def test_client_reports_task_metrics_on_its_validation_split(data_root, partition, task, metric):
    cfg = parse_run_config(
        pyproject_defaults()
        | {
            "model.source": "tiny",
            "model.quantization": "none",
            "data.root": str(data_root),
            "train.max-train-examples": 6,
            "eval.limit": 2,
            "eval.max-new-tokens": 12,
        }
    )
    runtime = model_runtime(cfg)
    data = client_data(cfg, {"partition-id": partition, "num-partitions": 3}, runtime.tokenizer)
    assert [len(v) for v in data.valid_examples.values()] == [2]

    metrics = generation_metrics(cfg, runtime, data, server_round=1)

    assert 0.0 <= metrics[f"eval.{task}.{metric}"] <= 100.0
    assert metrics[f"eval-seconds.{task}"] > 0
    assert {k.split(".")[1] for k in metrics if k.startswith("eval.")} == {task}


def test_eval_schedule_every_n_rounds_and_the_last():
    cfg = parse_run_config(pyproject_defaults() | {"eval.every": 2, "num-server-rounds": 5})
    due = [r for r in range(1, 6) if cfg.eval.due(r, cfg.run.num_server_rounds)]
    assert due == [2, 4, 5]
    never = parse_run_config(pyproject_defaults() | {"eval.every": 0})
    assert not any(never.eval.due(r, 3) for r in range(1, 4))
