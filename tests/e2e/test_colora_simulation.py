"""End to end through Flower's simulation engine: 3 CoLoRA clients, 2 rounds, tiny model.

Asserts the effects that matter: every client starts round 2 from the same aggregated
shared weights, each client's Sigma_k is its own and is reloaded from disk, the training
loss falls, and the run directory holds every artifact, including exported adapters that
plain ``PeftModel.from_pretrained`` loads and generates with.
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from client.personal_store import load_personal
from colora.base_model import resolve_model_path
from runconfig.schema import ModelSettings
from server.run_dir import read_metrics
from simulations.engine import simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("runs")
    simulate(
        {
            "model.source": "tiny",
            "output-dir": str(out),
            "run-name": "e2e",
            "num-server-rounds": 2,
            "data.root": str(data_root),
            "train.max-train-examples": 12,
            "train.eval-examples": 4,
            "train.max-seq-length": 192,
            "train.batch-size": 2,
            "train.sigma-steps": 2,
            "train.shared-steps": 4,
            "train.learning-rate": 0.01,
            "train.sigma-learning-rate": 0.01,
            "eval.every": 2,
            "eval.limit": 2,
            "eval.max-new-tokens": 24,
        },
        num_supernodes=3,
    )
    return out / "e2e"


def _by_client(entries):
    return {entry["client-id"]: entry for entry in entries}


def test_run_directory_holds_every_artifact(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model.source"] == "tiny" and config["num-server-rounds"] == 2
    rounds = read_metrics(run_dir)
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert record["bytes_up"] > 0 and record["bytes_down"] > record["bytes_up"]
        assert record["seconds"] > 0
        assert set(record["train_loss_by_task"]) == {"generation", "translation", "summarization"}
        assert set(record["eval_loss_by_task"]) == set(record["train_loss_by_task"])
    assert (run_dir / "shared_adapter" / "adapter_config.json").is_file()
    for cid in range(3):
        assert (run_dir / "clients" / f"client-{cid}" / "adapter" / "adapter_config.json").is_file()


def test_clients_report_task_metrics_every_eval_every_rounds(run_dir):
    first, second = read_metrics(run_dir)
    assert not any(k.startswith("eval.") for e in first["eval"] for k in e)
    expected = {"generation": "pass@1", "translation": "bleu4", "summarization": "rouge_l"}
    reported = {k.split(".")[1]: k for e in second["eval"] for k in e if k.startswith("eval.")}
    assert set(reported) == set(expected)
    for task, metric in expected.items():
        values = [
            e[f"eval.{task}.{metric}"] for e in second["eval"] if f"eval.{task}.{metric}" in e
        ]
        assert len(values) == 1 and 0.0 <= values[0] <= 100.0


def test_every_client_starts_round_2_from_identical_shared_weights(run_dir):
    first, second = read_metrics(run_dir)
    round2 = {e["shared-in-fingerprint"] for e in second["train"]}
    round1 = {e["shared-in-fingerprint"] for e in first["train"]}
    assert len(second["train"]) == 3 and len(round2) == 1
    assert round2 != round1  # the aggregate moved


def test_sigma_is_private_per_client_and_reloaded_from_disk(run_dir):
    first, second = read_metrics(run_dir)
    assert all(e["personal-loaded-round"] == 0 for e in first["train"])
    assert all(e["personal-loaded-round"] == 1 for e in second["train"])
    states = [
        load_personal(run_dir / "clients" / f"client-{c}" / "personal.safetensors")
        for c in range(3)
    ]
    assert all(s is not None and s[1] == 2 for s in states)
    key = next(iter(states[0][0]))
    eye = torch.eye(states[0][0][key].shape[0])
    assert not torch.allclose(states[0][0][key], eye)
    assert not torch.allclose(states[0][0][key], states[1][0][key])
    assert not torch.allclose(states[1][0][key], states[2][0][key])


def test_training_loss_falls(run_dir):
    first, second = read_metrics(run_dir)
    before, after = _by_client(first["train"]), _by_client(second["train"])
    for cid in range(3):
        assert after[cid]["train-loss"] < before[cid]["train-loss-first"], cid


def test_exported_adapter_loads_with_plain_peft_and_generates(run_dir):
    base_path = resolve_model_path(ModelSettings(source="tiny"))
    base = AutoModelForCausalLM.from_pretrained(base_path)
    model = PeftModel.from_pretrained(base, run_dir / "clients" / "client-1" / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "int Add(int a)"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8
