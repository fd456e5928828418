"""Experiment files, run naming, and the runner's skip/resume decisions (no simulation)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runconfig.fields import ConfigError
from simulations import summary
from simulations.experiment import APP_DIR, load_experiment, parse_experiment
from simulations.monitor import Peak, RoundTail
from simulations.runner import (
    DONE,
    FRESH,
    RESTART,
    RESUME,
    check_resources,
    check_strategy_names,
    plan,
    prepare_directory,
    run_state,
)

VALID = """
[experiment]
name = "exp"
seeds = [0, 7]
num-clients = 3
[base]
"model.source" = "tiny"
"num-server-rounds" = 2
[[strategies]]
label = "fedavg"
"adapter.personal" = "none"
[[strategies]]
label = "colora"
"""


def test_runs_share_seed_and_partition_and_are_named_by_label_and_seed(tmp_path):
    exp = parse_experiment(VALID)
    runs = exp.runs(tmp_path)
    assert [r.run_dir.name for r in runs] == [
        "fedavg-seed0", "fedavg-seed7", "colora-seed0", "colora-seed7"
    ]  # fmt: skip
    assert all(r.run_dir == tmp_path.resolve() / "exp" / "runs" / r.run_dir.name for r in runs)
    for run in runs:
        assert run.overrides["seed"] == run.seed
        assert run.overrides["output-dir"] == str(tmp_path.resolve() / "exp" / "runs")
        assert run.overrides["run-name"] == run.run_dir.name
        assert run.overrides["model.source"] == "tiny" and run.num_rounds == 2
    assert runs[0].overrides["adapter.personal"] == "none"
    assert "adapter.personal" not in runs[2].overrides


def _replace(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (_replace('num-clients = 3', 'num-clients = 3\nbogus = 1'), "experiment.bogus"),
        (_replace('num-clients = 3', 'num-clients = 0'), "experiment.num-clients"),
        (_replace('num-clients = 3', 'num-clients = 100001'), "experiment.num-clients"),
        (_replace('seeds = [0, 7]', 'seeds = [0, 2147483648]'), "experiment.seeds"),
        (_replace('seeds = [0, 7]', 'seeds = [-1]'), "experiment.seeds"),
        (_replace('num-clients = 3', 'gpus-per-client = "half"'), "experiment.gpus-per-client"),
        (_replace('seeds = [0, 7]', 'seeds = 3'), "experiment.seeds"),
        (_replace('seeds = [0, 7]', 'seeds = [1, 1]'), "experiment.seeds"),
        (_replace('name = "exp"', 'name = "a/b"'), "experiment.name"),
        (_replace('"num-server-rounds" = 2', '"train.nope" = 2'), "base.'train.nope'"),
        (_replace('"num-server-rounds" = 2', '"seed" = 2'), "base.'seed'"),
        (_replace('"num-server-rounds" = 2', '"train.batch-size" = "four"'), "train.batch-size"),
        (_replace('label = "colora"', 'label = "colora"\n"run-name" = "x"'),
         "strategies[1].'run-name'"),
        (_replace('label = "colora"', 'label = "colora"\n"adapter.rank" = 0'), "adapter.rank"),
        (_replace('label = "colora"', 'label = "fedavg"'), "strategies[1].label"),
        (_replace('label = "colora"', 'name = "colora"'), "strategies[1].label"),
        # one run directory on a case-insensitive file system
        (_replace('label = "colora"', 'label = "FedAvg"'), "strategies[1].label = 'FedAvg': dup"),
        # "<label>-seed<seed>" must stay a file name
        (_replace('label = "colora"', f'label = "{"l" * 241}"'), "strategies[1].label"),
        (VALID + "\n[extra]\n", "[extra]"),
        (VALID + '\n[ray]\nport = 1\n', "ray.port"),
        # the name is a directory: one longer than a file name fails only at mkdir
        (_replace('name = "exp"', f'name = "{"n" * 256}"'), "experiment.name"),
        # a negative Ray resource fails only inside every run's subprocess
        (VALID + '\n[ray]\nnum-cpus = -1\n', "ray.num-cpus"),
        (VALID + '\n[ray]\nnum-gpus = -2\n', "ray.num-gpus"),
        (VALID + '\n[ray]\nobject-store-memory = -1\n', "ray.object-store-memory"),
    ],
)  # fmt: skip
def test_errors_name_the_bad_key(text, names):
    with pytest.raises(ConfigError, match=re.escape(names)):
        parse_experiment(text)


@pytest.mark.parametrize(
    "make", [lambda p: None, lambda p: p.mkdir(), lambda p: p.write_bytes(b"\xff")]
)
def test_an_unreadable_experiment_file_is_a_config_error_naming_it(tmp_path, make):
    path = tmp_path / "exp.toml"
    make(path)  # missing, a directory, not UTF-8
    with pytest.raises(ConfigError, match=re.escape(f"experiment file {path}")):
        load_experiment(path)


def test_strategy_override_errors_name_the_strategy():
    text = _replace('label = "colora"', 'label = "colora"\n"adapter.rank" = 0')
    with pytest.raises(ConfigError, match=r"strategies\[1\] \(colora\): adapter.rank = 0"):
        parse_experiment(text)


def test_unknown_strategy_name_fails_before_any_run():
    exp = parse_experiment(_replace('label = "colora"', 'label = "colora"\n"strategy.name" = "x"'))
    with pytest.raises(ConfigError, match=r"strategies\[1\] \(colora\): strategy.name = 'x'"):
        check_strategy_names(exp)


@pytest.mark.parametrize(
    "name", sorted(path.stem for path in (APP_DIR / "simulations").glob("*.toml"))
)
def test_shipped_experiment_files_are_valid(name):
    exp = load_experiment(APP_DIR / "simulations" / f"{name}.toml")
    assert exp.settings.name == name
    check_strategy_names(exp)
    check_resources(exp, cpus=2)  # each fits the 2-core machine the README measures on


@pytest.mark.parametrize(
    ("extra", "cpus", "message"),
    [
        ("cpus-per-client = 4.0", 2, "experiment.cpus-per-client = 4.0: more than the 2 CPUs"),
        ("cpus-per-client = 2.0\n[ray]\nnum-cpus = 1", 16, "more than the 1 CPUs"),
        ("gpus-per-client = 0.5\n[ray]\nnum-gpus = 0", 2, "experiment.gpus-per-client = 0.5"),
    ],
)
def test_a_client_that_no_local_ray_could_host_fails_before_any_run(extra, cpus, message):
    exp = parse_experiment(_replace("num-clients = 3", f"num-clients = 3\n{extra}"))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_resources(exp, cpus=cpus)


def test_a_joined_ray_cluster_is_not_checked_here():
    extra = 'cpus-per-client = 64.0\n[ray]\naddress = "auto"'
    check_resources(parse_experiment(_replace("num-clients = 3", f"num-clients = 3\n{extra}")), 2)


def _fake_run(run_dir: Path, rounds: int, checkpoint: int | None = None, final: bool = False):
    run_dir.mkdir(parents=True)
    lines = "".join(json.dumps({"round": r}) + "\n" for r in range(1, rounds + 1))
    (run_dir / "metrics.jsonl").write_text(lines)
    if checkpoint is not None:
        (run_dir / "checkpoint").mkdir()
        (run_dir / "checkpoint" / "meta.json").write_text(json.dumps({"round": checkpoint}))
    if final:
        (run_dir / "shared_adapter").mkdir()
        (run_dir / "shared_adapter" / "adapter_config.json").write_text("{}")


def test_skip_resume_and_restart_decisions(tmp_path):
    exp = parse_experiment(VALID)
    fedavg0, fedavg7, colora0, colora7 = exp.runs(tmp_path)
    _fake_run(fedavg0.run_dir, rounds=2, checkpoint=2, final=True)  # completed
    _fake_run(fedavg7.run_dir, rounds=1, checkpoint=1)  # killed in round 2
    _fake_run(colora0.run_dir, rounds=1)  # killed after the metrics line, before a checkpoint
    assert run_state(fedavg0) == (DONE, 2)
    assert run_state(fedavg7) == (RESUME, 1)
    assert run_state(colora0) == (RESTART, 1)
    assert run_state(colora7) == (FRESH, 0)
    assert [p.state for p in plan(exp, tmp_path, only=["fedavg"])] == [DONE, RESUME]
    with pytest.raises(ConfigError, match="--only 'nope'"):
        plan(exp, tmp_path, only=["nope"])


def test_all_rounds_but_no_final_adapter_resumes_to_write_it(tmp_path):
    run = parse_experiment(VALID).runs(tmp_path)[0]
    _fake_run(run.run_dir, rounds=2, checkpoint=2)
    assert run_state(run) == (RESUME, 2)


def test_checkpoint_left_between_renames_counts(tmp_path):
    run = parse_experiment(VALID).runs(tmp_path)[0]
    _fake_run(run.run_dir, rounds=1)
    (run.run_dir / ".checkpoint-old").mkdir()
    (run.run_dir / ".checkpoint-old" / "meta.json").write_text(json.dumps({"round": 1}))
    assert run_state(run) == (RESUME, 1)


def _write_spec(exp, run, num_supernodes=3) -> None:
    run.run_dir.mkdir(parents=True)
    spec = {"overrides": {**run.overrides, "resume": False}, "num_supernodes": num_supernodes}
    (run.run_dir / "run_spec.json").write_text(json.dumps(spec))


def test_runs_made_with_other_settings_are_refused_new_seeds_are_not(tmp_path):
    exp = parse_experiment(VALID)
    prepare_directory(exp, tmp_path)
    assert (tmp_path / "exp" / "experiment.toml").read_text() == VALID
    _write_spec(exp, exp.runs(tmp_path)[0])  # fedavg-seed0 ran
    more_seeds = parse_experiment(VALID.replace("seeds = [0, 7]", "seeds = [0, 7, 8]"))
    prepare_directory(more_seeds, tmp_path)
    assert "[0, 7, 8]" in (tmp_path / "exp" / "experiment.toml").read_text()
    changed = parse_experiment(VALID.replace('"adapter.personal" = "none"', '"adapter.rank" = 4'))
    with pytest.raises(FileExistsError, match=r"fedavg-seed0 \(adapter.personal, adapter.rank\)"):
        prepare_directory(changed, tmp_path)
    fewer_clients = parse_experiment(VALID.replace("num-clients = 3", "num-clients = 2"))
    with pytest.raises(FileExistsError, match=r"fedavg-seed0 \(clients\)"):
        prepare_directory(fewer_clients, tmp_path)


@pytest.mark.parametrize(
    "damage",
    [b"{torn", b"\xff", b"[]", b"{}", b'{"overrides": 3, "num_supernodes": 3}',
     b'{"overrides": {}, "num_supernodes": "three"}', b"[" * 100_000],
)  # fmt: skip
def test_a_run_whose_spec_is_damaged_is_refused_not_resumed(tmp_path, damage):
    # What that run was cannot be told, so it must be neither resumed nor overwritten.
    exp = parse_experiment(VALID)
    run = exp.runs(tmp_path)[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "run_spec.json").write_bytes(damage)
    with pytest.raises(FileExistsError, match=r"fedavg-seed0 \(run_spec.json unreadable: "):
        prepare_directory(exp, tmp_path)
    assert (run.run_dir / "run_spec.json").read_bytes() == damage


def test_round_tail_reports_new_lines_and_rereads_after_truncation(tmp_path):
    seen: list[int] = []
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 1}\n')
    tail = RoundTail(tmp_path, lambda r: seen.append(r["round"]))
    path.write_text('{"round": 1}\n{"round": 2}\n{"round": 3')  # round 3 still being written
    tail.poll()
    assert seen == [2]
    path.write_text('{"round": 1}\n')  # resume truncates to the checkpoint
    tail.poll()
    path.write_text('{"round": 1}\n{"round": 2}\n')
    tail.poll()
    assert seen == [2, 2]


def test_round_tail_skips_a_malformed_line_and_reports_the_rounds_after_it(tmp_path):
    seen: list[int] = []
    path = tmp_path / "metrics.jsonl"
    path.write_text("")
    tail = RoundTail(tmp_path, lambda r: seen.append(r["round"]))
    path.write_text('{"round": 1}\n[1]\n{"round": "2"}\nnot json\n{"round": 3}\n')
    tail.poll()
    assert seen == [1, 3]


def test_summary_of_a_resumed_run_adds_an_attempt(tmp_path):
    payload = {"label": "a", "seed": 0, "num_supernodes": 3, "cpus_per_client": 1.0,
               "gpus_per_client": 0.0, "ray_init_args": {}}  # fmt: skip

    class Sampler:
        max_processes = 5
        total = Peak(rss=100, pss=50)

    first = summary.start(tmp_path, payload, 0, {})
    for rnd in (1, 2):
        summary.add_round(first, {"round": rnd, "seconds": 1.0}, Peak(10 * rnd, 5), 2.0)
    summary.finish(first, None, 30.0, Sampler())
    summary.write(tmp_path, first)
    second = summary.start(tmp_path, payload, 1, {})  # resumed after round 1
    summary.add_round(second, {"round": 2, "seconds": 1.5}, Peak(7, 3), 4.0)
    Sampler.total = Peak(rss=300, pss=60)
    summary.finish(second, 0, 10.0, Sampler())
    assert first["status"] == "interrupted" and second["status"] == "completed"
    assert [(r["round"], r["attempt"], r["peak_rss_bytes"]) for r in second["rounds"]] == [
        (1, 1, 10), (2, 2, 7)
    ]  # fmt: skip
    assert second["wall_seconds"] == 40.0
    assert (second["peak_rss_bytes"], second["peak_pss_bytes"]) == (300, 60)


@pytest.mark.parametrize(
    "damage",
    [b"{torn", b"\xff", b"[]", b'{"rounds": 3}', b'{"rounds": [{"round": "x"}]}',
     b'{"attempts": [1]}', b"[" * 100_000],
)  # fmt: skip
def test_a_damaged_summary_is_set_aside_and_the_resumed_run_times_afresh(tmp_path, damage):
    (tmp_path / "run_summary.json").write_bytes(damage)
    payload = {"label": "a", "seed": 0, "num_supernodes": 3, "cpus_per_client": 1.0,
               "gpus_per_client": 0.0, "ray_init_args": {}}  # fmt: skip
    record = summary.start(tmp_path, payload, 1, {})  # resumed after round 1
    assert record["rounds"] == [] and len(record["attempts"]) == 1
    assert (tmp_path / "run_summary.json.damaged").read_bytes() == damage
