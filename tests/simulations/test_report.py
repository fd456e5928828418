"""The report of a hand-written experiment directory: exact table values, plots, HTML links."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from simulations.report import write_report
from simulations.results import load_runs, mean_std, series
from tests.conftest import require_tool
from tests.simulations.fake_experiment import CHROMIUM, EXPECTED


def _row(markdown: str, heading: str, label: str) -> list[str]:
    """Cells of ``label``'s row in the first table after ``heading``."""
    section = markdown.split(heading, 1)[1]
    for line in section.splitlines():
        if line.startswith(f"| {label} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row {label!r} after {heading!r}")


@pytest.fixture
def report(fake_experiment):
    index = write_report(fake_experiment)
    return index.parent, (index.parent / "report.md").read_text()


def test_mean_std_is_the_sample_std():
    assert mean_std([1.0, 2.0]) == pytest.approx((1.5, 0.5**0.5))
    assert mean_std([3.0]) == (3.0, None)


def test_final_table_values_by_hand(report):
    _, md = report
    header = _row(md, "### generation", "strategy")
    assert header == ["strategy", "seeds", "eval-loss", "pass@1", "train-loss"]
    fedavg = dict(zip(header, _row(md, "### generation", "fedavg"), strict=True))
    assert fedavg["eval-loss"] == EXPECTED["fedavg generation eval-loss"]
    assert fedavg["pass@1"] == EXPECTED["fedavg generation pass@1"]
    clustered = dict(zip(header, _row(md, "### generation", "clustered"), strict=True))
    assert clustered["eval-loss"] == EXPECTED["clustered generation eval-loss"]
    translation = _row(md, "### translation", "fedavg")
    assert translation[:3] == ["fedavg", "2", "3.0000 ± 0.0000"]


def test_cost_table_values_by_hand(report):
    _, md = report
    fedavg = _row(md, "## Cost", "fedavg")
    assert fedavg[1:5] == ["2/2", EXPECTED["fedavg bytes"], EXPECTED["fedavg wall"],
                           EXPECTED["fedavg peak"]]  # fmt: skip
    clustered = _row(md, "## Cost", "clustered")
    assert clustered[1:3] == ["2/2", EXPECTED["clustered bytes"]]


def test_missing_and_failed_runs_are_stated(report):
    _, md = report
    missing = md.split("## Missing data", 1)[1]
    assert "`never-seed0`: planned, not run" in missing
    assert "`never-seed1`: planned, not run" in missing
    assert "`clustered-seed1`: rounds [2] failed" in missing
    assert "| never |" not in md  # no row for a strategy without runs


def test_plots_exist_and_html_references_every_png(report):
    out, md = report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"curve-eval-loss.png", "curve-train-loss.png", "curve-pass-1.png"} <= set(pngs)
    assert "similarity-clustered-seed0.png" in pngs and "clusters-clustered-seed1.png" in pngs
    assert not any(p.startswith("similarity-fedavg") for p in pngs)
    for png in out.glob("*.png"):
        assert png.stat().st_size > 2000, png
    html = (out / "index.html").read_text()
    assert sorted(set(re.findall(r'<img src="([^"]+)"', html))) == pngs
    assert sorted(set(re.findall(r"!\[[^]]*\]\(([^)]+)\)", md))) == pngs
    assert "cluster 0: clients 0, 2; cluster 1: clients 1" in md


def test_series_skip_failed_rounds_and_average_seeds(fake_experiment):
    runs = [r for r in load_runs(fake_experiment) if r.label == "clustered"]
    rounds, mean, std = series(runs, ("eval-loss", "generation"))
    assert rounds == [1, 2]
    assert mean == pytest.approx([(1.5 + 1.7) / 2, 0.5])  # round 2: seed 0 only
    assert std[1] == 0.0


def test_report_backfills_tensorboard_once(fake_experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from server.tensorboard import sync_run

    write_report(fake_experiment)
    run_dir = fake_experiment / "runs" / "fedavg-seed0"
    assert sync_run(run_dir) == 0  # already written by the report
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    values = [(e.step, e.value) for e in events.Scalars("eval/loss/generation")]
    assert values == [(1, pytest.approx(2.0)), (2, pytest.approx(1.0))]
    assert [e.value for e in events.Scalars("eval/pass@1/generation")] == pytest.approx([0.5] * 2)


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(fake_experiment, tmp_path):
    require_tool(CHROMIUM.exists(), f"{CHROMIUM} missing: apt-get install -y chromium")
    from PIL import Image

    index = write_report(fake_experiment)
    shot = index.parent / "screenshot.png"
    take_screenshot(index, shot, tmp_path / "chromium-profile")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 100  # text and plots, not a blank page
    # Matplotlib's first line colour (tab:blue) appears only if the curve PNGs rendered.
    blue = sum(n for n, (r, g, b) in colours if abs(r - 31) + abs(g - 119) + abs(b - 180) < 40)
    assert blue > 200, blue


def take_screenshot(index, png, profile) -> None:
    """Headless Chromium screenshot of a local HTML file (also the documented command)."""
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={png}",
         "--window-size=1200,3000", "--hide-scrollbars", f"file://{index}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    shutil.rmtree(profile, ignore_errors=True)
    assert png.exists() and png.stat().st_size > 10_000
