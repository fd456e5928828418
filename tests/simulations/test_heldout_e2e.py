"""The data-scarce experiment's pipeline for real on the tiny model: a dual run through Flower's
simulation engine, its held-out scoring at the best and final rounds with plain PEFT, and the
committed summary (a few minutes on 2 CPU cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.__main__ import main
from simulations.experiment import APP_DIR
from simulations.results import load_runs
from simulations.scoreboard import build_summary, from_runs

pytestmark = pytest.mark.slow
COLLABORATION = APP_DIR / "simulations" / "collaboration.toml"
TINY = {  # the experiment file, shrunk to the tiny model, 2 rounds, 4 test examples per task
    '"model.source" = "bundled"': '"model.source" = "tiny"',
    '"model.quantization" = "nf4"': '"model.quantization" = "none"',
    '"num-server-rounds" = 8': '"num-server-rounds" = 2',
    "test-examples = 64": "test-examples = 4",
    'name = "collaboration"': 'name = "collab_tiny"',
    "seeds = [0, 1, 2]": "seeds = [0]",
    '"eval.max-new-tokens" = 160': '"eval.max-new-tokens" = 8',
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("experiments")
    text = COLLABORATION.read_text()
    for old, new in TINY.items():
        assert old in text
        text = text.replace(old, new)
    path = root / "collab_tiny.toml"
    path.write_text(text)
    assert main(["run", str(path), "--output-root", str(root), "--only", "dual"]) == 0
    return root / "collab_tiny" / "runs" / "dual-seed0"


def test_held_out_metrics_at_best_and_final_rounds(run_dir):
    found = json.loads((run_dir / "test_metrics.json").read_text())
    assert found["rounds"]["final"] == 2 and found["rounds"]["best"] in (1, 2)
    assert found["test_examples"] == {"generation": 4, "summarization": 4, "translation": 4}
    for kind in ("best", "final"):
        assert "pass@1" in found["reported"][kind]["generation"]
        assert "codebleu" in found["reported"][kind]["translation"]
        assert "rouge_l" in found["reported"][kind]["summarization"]
    kept = {p.name for p in run_dir.glob("clients/client-*/rounds/round-*")}
    assert kept == {f"round-{r:03d}" for r in set(found["rounds"].values())}


def test_dual_adapters_export_with_rank_r_plus_r_p(run_dir):
    config = json.loads(
        (run_dir / "clients" / "client-0" / "adapter" / "adapter_config.json").read_text()
    )
    assert config["r"] == 8 + 4 and config["lora_alpha"] == 12


def test_summary_of_the_run(run_dir):
    summary = build_summary("collab_tiny", from_runs(load_runs(run_dir.parent.parent)))
    assert summary["seeds"] == [0]
    assert summary["tasks"]["translation"]["dual"]["best.codebleu"]["n"] == 1
