"""``simulations/smoke.toml`` for real: two strategies through Flower's simulation engine, a
resumed run, and the report with its screenshot (a few minutes on 2 CPU cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.run_dir import read_metrics
from simulations.__main__ import main
from simulations.experiment import APP_DIR, load_experiment
from simulations.runner import DONE, RESUME, plan
from tests.conftest import require_tool
from tests.simulations.fake_experiment import CHROMIUM
from tests.simulations.test_report import take_screenshot

pytestmark = pytest.mark.slow
SMOKE = APP_DIR / "simulations" / "smoke.toml"


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("experiments")
    assert main(["run", str(SMOKE), "--output-root", str(root)]) == 0
    return root / "smoke"


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "run_summary.json").read_text())


def test_every_run_completed_with_summary_and_tensorboard(experiment_dir):
    assert (experiment_dir / "experiment.toml").read_text() == SMOKE.read_text()
    for name in ("fedavg-seed0", "colora-seed0"):
        run_dir = experiment_dir / "runs" / name
        assert [r["round"] for r in read_metrics(run_dir)] == [1, 2]
        assert not any(r.get("failed") for r in read_metrics(run_dir))
        summary = _summary(run_dir)
        assert summary["status"] == "completed" and summary["wall_seconds"] > 0
        assert [r["round"] for r in summary["rounds"]] == [1, 2]
        assert summary["peak_rss_bytes"] > 100e6  # the tree: run process and Ray workers
        assert summary["attempts"][0]["max_processes"] > 2
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    config = json.loads((experiment_dir / "runs" / "fedavg-seed0" / "config.json").read_text())
    assert config["seed"] == 0 and config["adapter.personal"] == "none"


def test_a_second_invocation_skips_completed_runs(experiment_dir):
    exp = load_experiment(SMOKE)
    assert [p.state for p in plan(exp, experiment_dir.parent)] == [DONE, DONE]


def test_an_interrupted_run_resumes_from_its_checkpoint(experiment_dir):
    run_dir = experiment_dir / "runs" / "fedavg-seed0"
    # Make the run look killed during round 2: round 1's line and checkpoint, no final adapter.
    first = read_metrics(run_dir)[0]
    (run_dir / "metrics.jsonl").write_text(json.dumps(first) + "\n")
    meta = run_dir / "checkpoint" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "round": 1}))
    (run_dir / "shared_adapter" / "adapter_config.json").unlink()
    exp = load_experiment(SMOKE)
    assert [p.state for p in plan(exp, experiment_dir.parent, only=["fedavg"])] == [RESUME]
    assert main(["run", str(SMOKE), "--output-root", str(experiment_dir.parent)]) == 0
    assert [r["round"] for r in read_metrics(run_dir)] == [1, 2]
    assert "Resuming" in (run_dir / "run.log").read_text()
    attempts = _summary(run_dir)["attempts"]
    assert [a["resumed_after_round"] for a in attempts] == [0, 1]
    assert (run_dir / "shared_adapter" / "adapter_config.json").is_file()


def test_report_of_the_real_runs_renders(experiment_dir, tmp_path):
    assert main(["report", str(experiment_dir)]) == 0
    out = experiment_dir / "report"
    md = (out / "report.md").read_text()
    assert "| fedavg | 1 |" in md and "| colora | 1 |" in md
    assert (out / "curve-eval-loss.png").stat().st_size > 2000
    require_tool(CHROMIUM.exists(), f"{CHROMIUM} missing: apt-get install -y chromium")
    take_screenshot(out / "index.html", out / "screenshot.png", tmp_path / "profile")
