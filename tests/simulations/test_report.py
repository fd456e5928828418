"""The report of a hand-written experiment directory: exact table values, plots, HTML links."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("damage", [b"{torn", b"\xff", b"[1, 2]", b'{"1": 3}', b"[" * 100_000])
def test_a_damaged_tensorboard_map_rewrites_the_rounds_instead_of_raising(
    fake_experiment, damage, caplog
):
    # The server writes TensorBoard after every round: a raise here would stop the run.
    from server.tensorboard import sync_run, write_round

    run_dir = fake_experiment / "runs" / "fedavg-seed0"
    assert sync_run(run_dir) == 2
    (run_dir / "tensorboard" / "written.json").write_bytes(damage)
    assert sync_run(run_dir) == 2  # both rounds again
    assert "written.json is damaged" in caplog.text
    assert sync_run(run_dir) == 0  # and the map is whole again
    (run_dir / "tensorboard" / "written.json").write_bytes(damage)
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert write_round(run_dir, record)


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


def _set_line(run_dir, index, **changes):
    """Round line ``index`` of ``metrics.jsonl`` with ``changes`` (a hand edit, a bad write)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[index] = json.dumps({**json.loads(lines[index]), **changes})
    path.write_text("\n".join(lines) + "\n")


# One case per class of malformed input in a run directory; each must leave the report whole.
BAD_RUN_FILES = {
    "a line that is not an object": lambda d: (d / "metrics.jsonl").write_text(
        '[1]\nnull\n"x"\n' + (d / "metrics.jsonl").read_text()
    ),
    "a round of the wrong type": lambda d: _set_line(d, 1, round="2"),
    "a round beyond int64": lambda d: _set_line(d, 1, round=10**30),
    "a loss that is not a number": lambda d: _set_line(d, 1, eval_loss_by_task={"a": "x"}),
    "per-task losses not an object": lambda d: _set_line(d, 1, train_loss_by_task=[1]),
    "client metrics not numbers": lambda d: _set_line(
        d, 1, eval=[{"num-examples": 4, "eval.generation.pass@1": "x"}]
    ),
    "bytes that are not a count": lambda d: _set_line(d, 1, bytes_down=None),
    "a strategy log that is not an object": lambda d: _set_line(d, 1, strategy=[1]),
    "a ragged similarity matrix": lambda d: _set_line(
        d, 1, strategy={"similarity": {"matrix": [[1, 2], [3]], "weights": "x", "clients": 5}}
    ),
    "a similarity matrix of strings": lambda d: _set_line(
        d, 1, strategy={"similarity": {"matrix": [["a"]]}}
    ),
    "cluster indices that are not small ints": lambda d: _set_line(
        d, 1, strategy={"clusters": {"0": "a", "1": 10**30}}
    ),
    "metrics.jsonl not UTF-8": lambda d: (d / "metrics.jsonl").write_bytes(b"\xff\xfe\n"),
    "metrics.jsonl a directory": lambda d: (
        (d / "metrics.jsonl").unlink(),
        (d / "metrics.jsonl").mkdir(),
    ),
    "config.json a list": lambda d: (d / "config.json").write_text("[1]"),
    "config.json nested past the parser's stack": lambda d: (d / "config.json").write_text(
        "[" * 100_000
    ),
    "config.json not UTF-8": lambda d: (d / "config.json").write_bytes(b"\xff"),
    "run_summary.json a list": lambda d: (d / "run_summary.json").write_text("[1]"),
    "a status that is not text": lambda d: (d / "run_summary.json").write_text('{"status": 5}'),
    "a wall time beyond a float": lambda d: (d / "run_summary.json").write_text(
        '{"wall_seconds": 1' + "0" * 400 + ', "host": [1, 2]}'
    ),
}


@pytest.mark.parametrize("mutate", BAD_RUN_FILES.values(), ids=BAD_RUN_FILES)
def test_a_malformed_run_file_is_read_as_missing_data_not_a_crash(fake_experiment, mutate):
    mutate(fake_experiment / "runs" / "fedavg-seed0")
    md = (write_report(fake_experiment).parent / "report.md").read_text()
    assert "| fedavg-seed1 |" in md  # the other runs are all reported
    assert "| fedavg-seed0 |" in md


def test_a_malformed_round_line_is_skipped_and_the_rounds_after_it_kept(fake_experiment):
    path = fake_experiment / "runs" / "fedavg-seed0" / "metrics.jsonl"
    first, second = path.read_text().splitlines()
    path.write_text(f'{first}\n{{"round": "x"}}\nnot json\n{second}\n{{"round": 3, "tor')
    (run,) = [r for r in load_runs(fake_experiment) if r.run_dir.name == "fedavg-seed0"]
    assert [r["round"] for r in run.records] == [1, 2]  # torn last line skipped, too


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.write_bytes(b"\xff"),
        lambda p: (p.unlink(), p.mkdir()),
    ],
)
def test_an_unreadable_experiment_copy_leaves_the_report_without_the_plan(fake_experiment, mutate):
    mutate(fake_experiment / "experiment.toml")
    md = (write_report(fake_experiment).parent / "report.md").read_text()
    assert "# Experiment fake" in md and "planned, not run" not in md


def test_a_linked_run_directory_is_read_but_nothing_is_written_into_it(fake_experiment, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(fake_experiment / "runs" / "fedavg-seed0", elsewhere)
    (fake_experiment / "runs" / "linked-seed0").symlink_to(elsewhere)
    md = (write_report(fake_experiment).parent / "report.md").read_text()
    assert "| linked-seed0 |" in md
    assert not (elsewhere / "tensorboard").exists()
