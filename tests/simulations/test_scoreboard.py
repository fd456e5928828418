"""The committed summary and the README block, on a hand-made run tree (values by hand)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from simulations.heldout import (
    TEST_FILE,
    assignments,
    best_round,
    client_tasks,
    combine,
    prune_round_adapters,
)
from simulations.readme import build_block, replace_block, target_check, verdict
from simulations.results import load_runs
from simulations.scoreboard import build_summary, from_meta, from_runs, merge, write_summary

# (label, seed) -> translation (best test-loss, best codebleu, final test-loss)
RUNS = {
    ("local-only", 0): (1.0, 40.0, 1.2),
    ("local-only", 1): (1.2, 44.0, 1.4),
    ("dual", 0): (0.8, 50.0, 0.8),
    ("dual", 1): (0.9, 52.0, 0.9),
    ("fedavg", 0): (2.0, 10.0, 2.0),  # seed 1 not scored yet: n = 1
}


def _tree(root: Path) -> Path:
    exp_dir = root / "collab"
    for (label, seed), (loss, codebleu, final) in RUNS.items():
        run_dir = exp_dir / "runs" / f"{label}-seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"num-server-rounds": 3}))
        (run_dir / "run_summary.json").write_text(
            json.dumps({"wall_seconds": 1800.0, "host": {"cpus": 2, "platform": "Linux-x"}})
        )
        reported = {
            "best": {"translation": {"test-loss": loss, "codebleu": codebleu}},
            "final": {"translation": {"test-loss": final, "codebleu": codebleu - 1}},
        }
        (run_dir / TEST_FILE).write_text(json.dumps({"rounds": {}, "reported": reported}))
        # validation loss by round: 2.0, then loss + 0.5 (the best), then loss + 1.0 + seed
        curve = [2.0, loss + 0.5, loss + 1.0 + seed]
        lines = [
            {"round": i + 1, "eval_loss_by_task": {"translation": v}} for i, v in enumerate(curve)
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (exp_dir / "runs" / "fedavg-seed1").mkdir()  # running: no test metrics yet
    return exp_dir


def test_summary_has_exactly_the_issue_shape_and_hand_values(tmp_path):
    exp_dir = _tree(tmp_path)
    order = ["local-only", "fedavg", "dual"]
    path, _ = write_summary("collab", from_runs(load_runs(exp_dir)), order, tmp_path / "results")
    summary = json.loads(path.read_text())
    assert list(summary) == ["experiment", "seeds", "tasks", "lower_is_better"]
    assert summary["experiment"] == "collab" and summary["seeds"] == [0, 1]
    assert summary["lower_is_better"] == ["best.test-loss", "final.test-loss"]
    table = summary["tasks"]["translation"]
    assert list(table) == order
    # local-only: mean(1.0, 1.2) = 1.1; sample std = sqrt(2 * 0.1^2 / 1) = 0.1414
    assert table["local-only"]["best.test-loss"] == pytest.approx(
        {"mean": 1.1, "std": 0.141421356, "n": 2}
    )
    assert table["dual"]["final.codebleu"] == pytest.approx(
        {"mean": 50.0, "std": 1.414213562, "n": 2}
    )
    assert table["fedavg"]["best.codebleu"] == {"mean": 10.0, "std": 0.0, "n": 1}
    for stats in (s for label in table.values() for s in label.values()):
        assert set(stats) == {"mean", "std", "n"} and isinstance(stats["n"], int)
    meta = json.loads((tmp_path / "results" / "collab.meta.json").read_text())
    assert meta["runs"] == 5 and meta["wall_seconds"] == 9000.0
    assert meta["hardware"] == [{"cpus": 2, "platform": "Linux-x"}]
    # local-only round 2: mean(1.5, 1.7) = 1.6; round 3: mean(2.0, 3.2) = 2.6
    assert meta["validation_loss"]["local-only"] == pytest.approx({"1": 2.0, "2": 1.6, "3": 2.6})
    # each scored run's own curve and held-out metrics; fedavg's seed 1 is not scored yet
    assert set(meta["per_seed"]["fedavg"]) == {"0"}
    assert meta["per_seed"]["local-only"]["1"] == {
        "validation_loss": {"1": 2.0, "2": pytest.approx(1.7), "3": pytest.approx(3.2)},
        "heldout": {
            "translation": {
                "best.test-loss": 1.2,
                "best.codebleu": 44.0,
                "final.test-loss": 1.4,
                "final.codebleu": 43.0,
            }
        },
        "wall_seconds": 1800.0,
        "host": {"cpus": 2, "platform": "Linux-x"},
    }
    block = build_block(summary, meta)
    # each row says which seeds it averages: fedavg's seed 1 is not in its rows
    assert "| strategy | seeds | 1 | 2 | 3 |" in block
    assert "| local-only | 0, 1 | 2.000 | **1.600** | 2.600 |" in block
    assert "| fedavg | 0 | " in block
    assert "| strategy | seeds | best.test-loss | best.codebleu |" in block


def test_readme_block_names_the_winner_and_compares_with_the_spread(tmp_path):
    exp_dir = _tree(tmp_path)
    summary = build_summary(
        "collab", from_runs(load_runs(exp_dir)), ["local-only", "fedavg", "dual"]
    )
    block = build_block(summary, {"command": "python -m simulations run x", "runs": 5})
    assert "| strategy | best.test-loss | best.codebleu | final.test-loss |" in block
    assert "| dual | 0.850 ± 0.071 | 51.000 ± 1.414 |" in block
    # test-loss: dual 0.85 beats local-only 1.1 by 0.25; spread max(0.0707, 0.1414) = 0.1414
    assert "**dual** 0.850, ahead of local-only (1.100) by 0.250; 1.8x" in block
    # codebleu: dual 51 vs local-only 42 by 9; spread 2.83 -> 3.2x
    assert "**dual** 51.000, ahead of local-only (42.000) by 9.000; 3.2x" in block


def test_a_margin_inside_the_spread_is_not_a_clear_win():
    labels = {
        "a": {"m": {"mean": 1.0, "std": 0.3, "n": 3}},
        "b": {"m": {"mean": 1.1, "std": 0.1, "n": 3}},
    }
    assert "**a** 1.000" in verdict("t", "m", labels, lower=True)
    assert "not a clear win" in verdict("t", "m", labels, lower=True)
    assert "**b** 1.100" in verdict("t", "m", labels, lower=False)


def _stat(mean: float) -> dict:
    return {"mean": mean, "std": 0.0, "n": 1}


def _summary() -> dict:
    """Two tasks, as the summary lists them (target_check reads the tasks from it)."""
    return {"experiment": "x", "seeds": [0], "tasks": {"generation": {}, "translation": {}}}


def _meta(runs: dict) -> dict:
    """``runs``: (label, seed) -> (validation curve, ((gen loss, pass@1), (trans loss,
    codebleu))), as ``scoreboard.per_seed`` writes them into the meta file."""
    per_seed: dict = {}
    for (label, seed), (curve, ((g_loss, g_pass), (t_loss, t_bleu))) in runs.items():
        per_seed.setdefault(label, {})[str(seed)] = {
            "validation_loss": {str(r): v for r, v in enumerate(curve, start=1)},
            "heldout": {
                "generation": {"best.test-loss": g_loss, "best.pass@1": g_pass},
                "translation": {"best.test-loss": t_loss, "best.codebleu": t_bleu},
            },
        }
    return {"per_seed": per_seed}


RUNS_SEED0 = {
    ("local-only", 0): ([1.0], ((1.0, 2.0), (0.6, 30.0))),  # lowest validation: not a candidate
    ("fedavg", 0): ([2.0], ((1.0, 3.0), (0.7, 31.0))),  # average held-out loss 0.85
    # the best held-out numbers, but not the lowest validation loss: never chosen
    ("clustered", 0): ([2.0, 1.6], ((0.5, 9.0), (0.4, 40.0))),
    ("similarity-weighted-none", 0): ([2.0, 1.5, 1.7], ((0.9, 2.0), (0.6, 31.0))),  # avg 0.75
}


def test_target_check_picks_the_similarity_aware_run_on_validation_and_judges_each_clause():
    lines = "\n".join(target_check(_summary(), _meta(RUNS_SEED0)))
    assert "for **similarity-weighted-none**, the similarity-aware configuration with the " in (
        lines
    )
    assert "lowest validation loss (1.500, on seed 0)" in lines
    assert "Judged on seed 0, the seeds it, local-only and fedavg share" in lines
    assert "generation `best.pass@1`: 2.000 against local-only's 2.000: at least as good" in lines
    assert "translation `best.test-loss`: 0.600 against local-only's 0.600: at least as good" in (
        lines
    )
    assert "averaged over tasks: 0.750 against fedavg's 0.850: beats it" in lines
    assert lines.endswith("Target **met** on seed 0 (1 of the 3 seeds the target is over).")
    # one clause lost (translation's CodeBLEU below local-only's) fails the whole target
    worse = {**RUNS_SEED0, ("local-only", 0): ([1.0], ((1.0, 2.0), (0.6, 32.0)))}
    lines = "\n".join(target_check(_summary(), _meta(worse)))
    assert "translation `best.codebleu`: 31.000 against local-only's 32.000: worse" in lines
    assert "Target **not met**" in lines
    no_candidate = ["Target: no similarity-aware strategy has results yet."]
    assert target_check(_summary(), _meta({("fedavg", 0): RUNS_SEED0[("fedavg", 0)]})) == (
        no_candidate
    )
    assert target_check(_summary(), None) == no_candidate


def test_target_check_compares_labels_only_on_the_seeds_they_share():
    """A candidate with an extra seed is chosen, and judged, on the seeds the others have
    too: here seed 1 would make similarity-weighted-none look best and beat local-only."""
    runs = {
        **RUNS_SEED0,
        ("similarity-weighted-sigma", 0): ([1.8, 1.55], ((0.9, 2.0), (0.6, 29.0))),
        ("similarity-weighted-none", 1): ([0.1], ((0.1, 9.0), (0.1, 99.0))),
        ("local-only", 1): ([1.0], ((1.0, 2.0), (0.6, 30.0))),
    }
    lines = "\n".join(target_check(_summary(), _meta(runs)))
    assert "for **similarity-weighted-none**" in lines
    assert "(1.500, on seed 0)" in lines  # not (1.5 + 0.1) / 2 over seeds 0 and 1
    assert "Judged on seed 0" in lines  # fedavg has no seed 1
    assert "generation `best.test-loss`: 0.900 against local-only's 1.000" in lines
    # the chosen label, local-only and fedavg share no seed: nothing to judge yet
    apart = {k: v for k, v in runs.items() if k != ("fedavg", 0)}
    apart[("fedavg", 2)] = RUNS_SEED0[("fedavg", 0)]
    assert (
        target_check(_summary(), _meta(apart))[-1] == "Target **not met**: no seed has all three."
    )
    del apart[("fedavg", 2)]
    assert target_check(_summary(), _meta(apart))[-1] == (
        "Target **not met**: fedavg has no result yet."
    )


def test_target_check_lists_each_seeds_difference_when_judged_on_several():
    """Hand values, two seeds: the means decide each clause, and the per-seed differences
    show whether the sign holds on both (here generation's loss wins on one seed only)."""
    runs = {
        **RUNS_SEED0,
        ("local-only", 1): ([1.0], ((1.2, 4.0), (0.8, 30.0))),
        ("fedavg", 1): ([2.0], ((1.0, 3.0), (0.7, 31.0))),
        ("similarity-weighted-none", 1): ([2.0, 1.5], ((1.25, 4.0), (0.7, 33.0))),
    }
    lines = target_check(_summary(), _meta(runs))
    assert (
        "- generation `best.test-loss`: 1.075 against local-only's 1.100: at least as good "
        "(per seed: -0.100, +0.050; better on 1, worse on 1 of 2)." in lines
    )
    assert (
        "- generation `best.pass@1`: 3.000 against local-only's 3.000: at least as good "
        "(per seed: +0.000, +0.000; better on 0, worse on 0, tied on 2 of 2)." in lines
    )
    assert (
        "- translation `best.codebleu`: 32.000 against local-only's 30.000: at least as good "
        "(per seed: +1.000, +3.000; better on 2, worse on 0 of 2)." in lines
    )
    # per seed, ours over tasks: 0.75 and 0.975; fedavg's: 0.85 and 0.85
    assert (
        "- `best.test-loss` averaged over tasks: 0.863 against fedavg's 0.850: does not beat "
        "it (per seed: -0.100, +0.125; better on 1, worse on 1 of 2)." in lines
    )
    assert lines[-1] == "Target **not met** on seeds 0, 1 (2 of the 3 seeds the target is over)."
    # one judged seed: the mean is the seed, no per-seed list
    assert all("per seed" not in line for line in target_check(_summary(), _meta(RUNS_SEED0)))


def test_readme_block_is_replaced_between_its_markers():
    text = "intro\n<!-- results:x -->\nold\n<!-- /results:x -->\nafter\n"
    assert replace_block(text, "x", "new") == (
        "intro\n<!-- results:x -->\nnew\n<!-- /results:x -->\nafter\n"
    )
    assert replace_block("intro\n", "x", "new").endswith("<!-- /results:x -->\n")


def test_best_round_is_chosen_on_validation_loss_skipping_failed_rounds():
    records = [
        {"round": 1, "eval_loss_by_task": {"a": 2.0, "b": 2.0}},
        {"round": 2, "eval_loss_by_task": {"a": 1.0, "b": 1.5}},  # mean 1.25
        {"round": 3, "failed": True},
        {"round": 4, "eval_loss_by_task": {"a": 1.25, "b": 1.25}},  # a tie: the earliest
        {"round": 5, "eval_loss_by_task": {"a": 1.5, "b": 1.5}},
    ]
    assert best_round(records) == 2
    with pytest.raises(ValueError, match="validation loss"):
        best_round([{"round": 1, "failed": True}])


def test_test_examples_are_dealt_once_to_the_clients_holding_each_task():
    record = {
        "eval": [
            {"client-id": 3, "eval-loss.translation": 1.0},
            {"client-id": 1, "eval-loss.translation": 1.0},
            {"client-id": 0, "eval-loss.generation": 1.0, "eval-loss.translation": 2.0},
        ]
    }
    holders = client_tasks(record)
    assert holders == {3: ["translation"], 1: ["translation"], 0: ["generation", "translation"]}
    dealt = assignments(holders, {"translation": list(range(7)), "generation": [10, 11]})
    assert dealt[0] == {"translation": [0, 3, 6], "generation": [10, 11]}
    assert dealt[1] == {"translation": [1, 4]} and dealt[3] == {"translation": [2, 5]}


def test_combine_weights_clients_by_examples_scored():
    got = combine([(3, {"test-loss": 1.0, "bleu4": 10.0}), (1, {"test-loss": 2.0})])
    assert got == {"bleu4": 10.0, "test-loss": 1.25}


def test_round_adapters_not_reported_are_pruned(tmp_path):
    for rnd in (1, 2, 3):
        (tmp_path / "clients" / "client-0" / "rounds" / f"round-{rnd:03d}").mkdir(parents=True)
    prune_round_adapters(tmp_path, {2, 3})
    left = sorted(p.name for p in (tmp_path / "clients" / "client-0" / "rounds").iterdir())
    assert left == ["round-002", "round-003"]


def test_readme_block_links_the_committed_validation_plot(tmp_path):
    from simulations.readme import write_readme_block
    from simulations.scoreboard import curves_path

    results = tmp_path / "simulations" / "results"
    path, _ = write_summary(
        "collab", from_runs(load_runs(_tree(tmp_path))), ["local-only", "dual"], results
    )
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    assert "![validation loss" not in write_readme_block(path, readme)
    curves_path(path).write_bytes(b"png")
    write_readme_block(path, readme)
    assert (
        "![validation loss per round, mean over tasks](simulations/results/collab.validation.png)"
        in (readme.read_text())
    )


def test_an_exact_tie_is_called_a_tie():
    labels = {"a": {"m": _stat(1.5)}, "b": {"m": _stat(1.5)}, "c": {"m": _stat(0.0)}}
    assert verdict("t", "m", labels, lower=False) == "- **t**, `m`: a and b tie at 1.500."


def test_a_winner_on_other_seeds_is_not_called_a_win():
    labels = {"a": {"m": {"mean": 1.0, "std": 0.1, "n": 2}}, "b": {"m": _stat(2.0)}}
    assert verdict("t", "m", labels, lower=True) == (
        "- **t**, `m` (lower is better): **a** 1.000, ahead of b (2.000) by 1.000; "
        "on unequal seeds (2 against 1): not comparable."
    )


def test_a_later_report_adds_to_the_committed_runs_instead_of_replacing_them(tmp_path):
    """Run directories live one session; the committed meta keeps every scored run. A report
    on a directory holding only new runs merges them in, and a run scored again replaces its
    own record only."""
    results = tmp_path / "results"
    order = ["local-only", "fedavg", "dual"]
    first = from_runs(load_runs(_tree(tmp_path / "a")))
    write_summary("collab", first, order, results)
    # a later session: a fresh tree holding dual seed 2 and a re-scored local-only seed 0
    later = tmp_path / "b"
    _tree(later)
    for run_dir in (later / "collab" / "runs").iterdir():
        if run_dir.name not in {"dual-seed1", "local-only-seed0"}:
            for f in run_dir.iterdir():
                f.unlink()
            run_dir.rmdir()
    (later / "collab" / "runs" / "dual-seed1").rename(later / "collab" / "runs" / "dual-seed2")
    rescored = later / "collab" / "runs" / "local-only-seed0" / TEST_FILE
    data = json.loads(rescored.read_text())
    data["reported"]["best"]["translation"]["test-loss"] = 0.5
    rescored.write_text(json.dumps(data))
    path, scored = write_summary("collab", from_runs(load_runs(later / "collab")), order, results)
    summary = json.loads(path.read_text())
    assert summary["seeds"] == [0, 1, 2]
    table = summary["tasks"]["translation"]
    assert table["dual"]["best.test-loss"]["n"] == 3  # seeds 0, 1 kept, 2 added
    assert table["fedavg"]["best.codebleu"] == {"mean": 10.0, "std": 0.0, "n": 1}  # kept
    # local-only seed 0 replaced: mean(0.5, 1.2) = 0.85
    assert table["local-only"]["best.test-loss"]["mean"] == pytest.approx(0.85)
    meta = json.loads((results / "collab.meta.json").read_text())
    assert meta["runs"] == len(scored) == 6 and meta["wall_seconds"] == 6 * 1800.0
    assert set(meta["per_seed"]["dual"]) == {"0", "1", "2"}
    # the same runs again change nothing: reports are idempotent
    before = (path.read_text(), (results / "collab.meta.json").read_text())
    write_summary("collab", from_runs(load_runs(later / "collab")), order, results)
    assert (path.read_text(), (results / "collab.meta.json").read_text()) == before


def test_records_from_before_per_run_walls_share_the_recorded_total():
    meta = _meta(RUNS_SEED0) | {"wall_seconds": 400.0, "hardware": [{"cpus": 2}]}
    meta["per_seed"]["fedavg"]["0"] |= {"wall_seconds": 100.0, "host": {"cpus": 16}}
    scored = {s.key: s for s in from_meta(meta)}
    assert scored[("fedavg", 0)].wall_seconds == 100.0
    assert scored[("fedavg", 0)].host == {"cpus": 16}
    assert scored[("local-only", 0)].wall_seconds == 100.0  # (400 - 100) / 3
    assert scored[("local-only", 0)].host == {"cpus": 2}
    assert sum(s.wall_seconds for s in scored.values()) == 400.0
    fresh = replace(scored[("clustered", 0)], wall_seconds=7.0)
    assert {s.key: s for s in merge(scored.values(), [fresh])}[("clustered", 0)] == fresh


@pytest.mark.parametrize(
    "per_seed, where",
    [
        ([1, 2], "per_seed: expected a table"),
        ({"fedavg": 3}, "per_seed.fedavg: expected a table"),
        ({"fedavg": {"zero": {}}}, "per_seed.fedavg.zero: expected an integer seed"),
        ({"fedavg": {"0": {"validation_loss": {"1": "x"}}}}, "per_seed.fedavg.0.validation_loss.1"),
        ({"fedavg": {"0": {"heldout": {"t": {"m": None}}}}}, "per_seed.fedavg.0.heldout.t.m"),
        ({"fedavg": {"0": {"wall_seconds": True}}}, "per_seed.fedavg.0.wall_seconds"),
        ({"fedavg": {"0": {"resumed_after": [0, -1]}}}, "per_seed.fedavg.0.resumed_after"),
        ({"fedavg": {"0": {"resumed_after": "4"}}}, "per_seed.fedavg.0.resumed_after"),
    ],
)
def test_a_malformed_committed_record_is_refused_naming_it_and_nothing_is_written(
    tmp_path, per_seed, where
):
    results = tmp_path / "results"
    results.mkdir()
    meta = results / "collab.meta.json"
    meta.write_text(json.dumps({"per_seed": per_seed}))
    with pytest.raises(ValueError, match=re.escape(where)):
        write_summary("collab", from_runs(load_runs(_tree(tmp_path))), (), results)
    assert sorted(p.name for p in results.iterdir()) == ["collab.meta.json"]
    assert json.loads(meta.read_text()) == {"per_seed": per_seed}


def test_the_record_says_which_runs_crossed_a_restart(tmp_path):
    exp_dir = _tree(tmp_path)
    summary_file = exp_dir / "runs" / "dual-seed1" / "run_summary.json"
    attempts = [{"resumed_after_round": 0}, {"resumed_after_round": 2}]
    summary_file.write_text(
        json.dumps({**json.loads(summary_file.read_text()), "attempts": attempts})
    )
    bad = exp_dir / "runs" / "dual-seed0" / "run_summary.json"  # an attempt without its round
    bad.write_text(json.dumps({"attempts": [{"resumed_after_round": 0}, {}]}))
    scored = {s.key: s for s in from_runs(load_runs(exp_dir))}
    assert scored["dual", 1].record()["resumed_after"] == [0, 2]
    assert "resumed_after" not in scored["dual", 0].record()  # unknown, not guessed
    assert "resumed_after" not in scored["local-only", 0].record()  # no attempts recorded
    # through the committed meta file and back
    meta = {"per_seed": {"dual": {"1": scored["dual", 1].record()}}}
    assert from_meta(json.loads(json.dumps(meta)))[0].resumed_after == [0, 2]


@pytest.mark.parametrize(
    "readme_text",
    [
        "a\n<!-- results:x -->\nold\n",  # start only: the next write would cut the user's text
        "a\n<!-- /results:x -->\n",  # end only
        "<!-- /results:x -->\na\n<!-- results:x -->\n",  # swapped
        "<!-- results:x -->\n<!-- results:x -->\n<!-- /results:x -->\na\n<!-- /results:x -->\n",
        "<!-- results:x -->\n<!-- /results:x -->\na\n<!-- results:x -->\n<!-- /results:x -->\n",
    ],
)
def test_readme_markers_not_once_each_are_refused(readme_text):
    with pytest.raises(ValueError, match="must appear once each"):
        replace_block(readme_text, "x", "new")


def _committed(tmp_path: Path) -> Path:
    results = tmp_path / "simulations" / "results"
    path, _ = write_summary("collab", from_runs(load_runs(_tree(tmp_path))), (), results)
    return path


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda s, m: "[]", "summary"),
        (lambda s, m: "{", "collab.json"),
        (lambda s, m: "[" * 100_000, "collab.json: nested too deeply"),
        (lambda s, m: json.dumps({**s, "experiment": "x -->"}), "experiment"),
        (lambda s, m: json.dumps({**s, "tasks": []}), "tasks"),
        (lambda s, m: json.dumps({**s, "seeds": 5}), "seeds"),
        (lambda s, m: json.dumps({**s, "tasks": {"t": {"a": {"best.x": {"mean": "1"}}}}}),
         "tasks.t.a.best.x"),
        (lambda s, m: json.dumps({**s, "lower_is_better": None}), "lower_is_better"),
    ],
)  # fmt: skip
def test_a_malformed_summary_is_refused_naming_it_and_the_readme_is_untouched(
    tmp_path, edit, where
):
    from simulations.readme import write_readme_block

    path = _committed(tmp_path)
    path.write_text(edit(json.loads(path.read_text()), None))
    readme = tmp_path / "README.md"
    readme.write_text("mine\n")
    with pytest.raises(ValueError, match=re.escape(where)):
        write_readme_block(path, readme)
    assert readme.read_text() == "mine\n"


@pytest.mark.parametrize(
    ("meta", "where"),
    [
        ({"validation_loss": []}, "validation_loss"),
        ({"validation_loss": {"a": {"x": 1.0}}}, "validation_loss.a"),
        ({"hardware": [1]}, "hardware"),
        ({"wall_seconds": "1"}, "wall_seconds"),
        ({"per_seed": {"a": {"0": {"heldout": "x"}}}}, "per_seed.a.0.heldout"),
    ],
)
def test_a_malformed_meta_file_is_refused_naming_it_and_the_readme_is_untouched(
    tmp_path, meta, where
):
    from simulations.readme import write_readme_block
    from simulations.scoreboard import meta_path

    path = _committed(tmp_path)
    meta_path(path).write_text(json.dumps(meta))
    readme = tmp_path / "README.md"
    readme.write_text("mine\n")
    with pytest.raises(ValueError, match=re.escape(f"collab.meta.json: {where}")):
        write_readme_block(path, readme)
    assert readme.read_text() == "mine\n"


@pytest.mark.parametrize("content", [b"\xff", b"[" * 100_000, b"1" * 5000])
def test_an_unreadable_meta_file_is_refused_naming_it(tmp_path, content):
    from simulations.readme import write_readme_block
    from simulations.scoreboard import meta_path

    path = _committed(tmp_path)
    meta_path(path).write_bytes(content)
    with pytest.raises(ValueError, match=r"collab\.meta\.json: not readable JSON"):
        write_readme_block(path)


def test_readme_records_with_a_part_missing_still_give_a_block(tmp_path):
    from simulations.readme import write_readme_block
    from simulations.scoreboard import meta_path

    path = _committed(tmp_path)
    labels = ("clustered", "local-only", "fedavg")
    meta_path(path).write_text(json.dumps({"per_seed": {label: {"0": {}} for label in labels}}))
    assert "missing on a judged seed" in write_readme_block(path)


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    from simulations.__main__ import main

    path = _committed(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- results:collab -->\n")
    assert main(["readme", str(path), "--readme", str(readme)]) == 2
    assert main(["readme", str(tmp_path / "none.json")]) == 2
    assert main(["report", str(tmp_path / "no-experiment")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "README.md" in err[0] and "none.json" in err[1] and "no-experiment" in err[2]
    assert readme.read_text() == "a\n<!-- results:collab -->\n"


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        '{"reported": []}',
        '{"reported": {"best": {"translation": [1]}}}',
        '{"reported": {"best": {"translation": {"test-loss": "1"}}}}',
        '{"reported": {"best": {"translation": {"test-loss": 1' + "0" * 400 + "}}}}",
        b"\xff",
        "[" * 100_000,
    ],
)
def test_malformed_test_metrics_count_as_not_scored(tmp_path, content):
    exp_dir = _tree(tmp_path)
    path = exp_dir / "runs" / "dual-seed0" / TEST_FILE
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    scored = {s.key for s in from_runs(load_runs(exp_dir))}
    assert ("dual", 0) not in scored and ("dual", 1) in scored
