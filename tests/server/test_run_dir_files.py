"""Files are never lost or overwritten by mistake (issue 14, section 5): a torn metrics tail,
and checkpoints validated as strictly as replies, with a fallback to the previous one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from colora.wire import to_numpy
from server import run_dir as rundir
from tests.server.federation_fakes import AnsweringGrid, federate
from tests.strategies.fakes import lora_state

LAYOUT = lora_state(np.random.default_rng(0))
KEY = sorted(LAYOUT)[0]


def _ckpt(server_round: int, arrays=None, state=None, strategy="fedavg") -> rundir.Checkpoint:
    arrays = {k: v + server_round for k, v in LAYOUT.items()} if arrays is None else arrays
    return rundir.Checkpoint(server_round, arrays, state or {}, {"strategy": strategy})


def _two_checkpoints(tmp_path):
    rundir.save_checkpoint(tmp_path, _ckpt(1))
    rundir.save_checkpoint(tmp_path, _ckpt(2))
    return tmp_path / rundir.CHECKPOINT


def _load(tmp_path):
    return rundir.load_checkpoint(tmp_path, layout=LAYOUT, max_round=5, strategy="fedavg")


def _rewrite(path, **changes):
    tensors = load_file(path)
    tensors.update(changes)
    save_file(tensors, path)


def _nan_arrays(ckpt):
    _rewrite(ckpt / "arrays.safetensors", **{KEY: np.full_like(LAYOUT[KEY], np.nan)})


def _unknown_4mb_key(ckpt):
    _rewrite(ckpt / "arrays.safetensors", smuggled=np.zeros((1024, 1024), np.float32))


def _wrong_shape(ckpt):
    _rewrite(ckpt / "arrays.safetensors", **{KEY: np.zeros((1, 1), np.float32)})


def _missing_key(ckpt):
    tensors = load_file(ckpt / "arrays.safetensors")
    tensors.pop(KEY)
    save_file(tensors, ckpt / "arrays.safetensors")


def _nan_state(ckpt):
    save_file({"m": np.array([np.inf])}, ckpt / "strategy.safetensors")


def _garbage_arrays(ckpt):
    (ckpt / "arrays.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")


def _meta(text):
    return lambda ckpt: (ckpt / "meta.json").write_text(text)


CORRUPTIONS = {
    "NaN in the arrays": (_nan_arrays, "NaN or Inf"),
    "an unknown 4 MB key": (_unknown_4mb_key, "unexpected key 'smuggled'"),
    "a wrong shape": (_wrong_shape, "expected shape"),
    "a missing key": (_missing_key, "missing key"),
    "Inf in the strategy state": (_nan_state, "NaN or Inf"),
    "garbage safetensors": (_garbage_arrays, "unreadable safetensors"),
    "round -3": (_meta('{"round": -3, "strategy": "fedavg"}'), "'round' must be an integer"),
    "round beyond the run": (_meta('{"round": 9, "strategy": "fedavg"}'), "beyond the run's 5"),
    "round as a string": (_meta('{"round": "2", "strategy": "fedavg"}'), "'round' must be"),
    "round as a bool": (_meta('{"round": true, "strategy": "fedavg"}'), "'round' must be"),
    "a truncated meta.json": (_meta('{"round": 2, "stra'), "unreadable or truncated JSON"),
    "meta.json nested past the parser's stack": (_meta("[" * 100_000), "unreadable or trunc"),
    "meta.json not an object": (_meta("[2]"), "'round' must be"),
    "meta.json of another strategy": (_meta('{"round": 2, "strategy": "coba"}'), "strategy 'coba'"),
    "meta.json missing": (lambda c: (c / "meta.json").unlink(), "unreadable"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_bad_checkpoint_falls_back_to_the_previous_one_with_a_log_line(tmp_path, case, caplog):
    corrupt, reason = CORRUPTIONS[case]
    corrupt(_two_checkpoints(tmp_path))
    loaded = _load(tmp_path)
    assert loaded.server_round == 1
    np.testing.assert_array_equal(loaded.arrays[KEY], LAYOUT[KEY] + 1)
    (line,) = [r.getMessage() for r in caplog.records if "Ignoring checkpoint" in r.getMessage()]
    assert reason in line and "falling back to the previous one" in line


def test_no_valid_checkpoint_at_all_gives_none(tmp_path, caplog):
    _nan_arrays(_two_checkpoints(tmp_path))
    _meta("{")(tmp_path / rundir.PREVIOUS)
    assert _load(tmp_path) is None
    assert sum("Ignoring checkpoint" in r.getMessage() for r in caplog.records) == 2
    assert rundir.checkpoint_round(tmp_path) == 2  # meta-only view: the arrays are not read


def test_a_torn_last_metrics_line_is_skipped_and_trimmed(tmp_path, caplog):
    for r in (1, 2):
        rundir.append_metrics(tmp_path, {"round": r})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"round": 3, "train": [{"cli')  # killed mid-write
    assert [m["round"] for m in rundir.read_metrics(tmp_path)] == [1, 2]
    assert any("torn last line 3" in r.getMessage() for r in caplog.records)
    rundir.truncate_metrics(tmp_path, 2)
    rundir.append_metrics(tmp_path, {"round": 3})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3]


MALFORMED_ROUNDS = {
    "central DP entry not an object": {"round": 2, "central_dp": "noise"},
    "central DP value not a number": {"round": 2, "central_dp": {"epsilon_spent": "1"}},
    "privacy as a list": {"round": 2, "privacy": [1.0]},
    "round as a string": {"round": "2"},
    "round as a bool": {"round": True},
}


@pytest.mark.parametrize("case", sorted(MALFORMED_ROUNDS))
def test_a_malformed_round_line_is_skipped_on_resume_and_the_rest_kept(tmp_path, case, caplog):
    """What resume reads (central DP's accountant replays every round's entry) is checked
    line by line, as the report's reader does: one bad line costs that line only."""
    for record in ({"round": 1}, MALFORMED_ROUNDS[case], {"round": 3}):
        rundir.append_metrics(tmp_path, record)
    assert [m["round"] for m in rundir.read_metrics(tmp_path)] == [1, 3]
    assert any("skipping line 2" in r.getMessage() for r in caplog.records)


def test_a_round_line_nested_past_the_parser_is_skipped(tmp_path, caplog):
    rundir.append_metrics(tmp_path, {"round": 1})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write("[" * 100_000 + "\n")
    rundir.append_metrics(tmp_path, {"round": 3})
    assert [m["round"] for m in rundir.read_metrics(tmp_path)] == [1, 3]
    assert any("skipping line 2" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("server_task_identity")
def test_resume_after_a_torn_line_and_a_poisoned_checkpoint_ends_where_a_clean_run_does(tmp_path):
    clean = federate(tmp_path, AnsweringGrid(), run_name="clean", **{"num-server-rounds": 3})
    killed = federate(tmp_path, AnsweringGrid(), run_name="k", **{"num-server-rounds": 2})
    with open(killed.run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"round": 3, "se')
    _nan_arrays(killed.run_dir / rundir.CHECKPOINT)  # round 2's checkpoint is poisoned
    resumed = federate(
        tmp_path, AnsweringGrid(), run_name="k", **{"num-server-rounds": 3, "resume": True}
    )
    assert [m["round"] for m in rundir.read_metrics(resumed.run_dir)] == [1, 2, 3]
    for key, value in to_numpy(clean.arrays).items():
        np.testing.assert_array_equal(to_numpy(resumed.arrays)[key], value)


@pytest.mark.usefixtures("server_task_identity")
def test_similarity_weighted_keeps_absent_clients_mixtures_on_disk_in_the_run_dir(tmp_path):
    """Issue 13: node 3 (client 2) fails round 2, so its round-1 mixture leaves memory for
    ``strategy-state/mixtures/2-r1.npy``; the checkpoint names the file instead of holding the
    vector, and a run resumed from it completes (the strategy-level round trip of the bits is
    tests/strategies/test_vector_store.py)."""
    from strategies.vector_store import INDEX_KEY
    from tests.server.federation_fakes import crashed, honest_train

    calls = []

    def fails_in_round_2(message):
        calls.append(message)
        return (crashed if len(calls) == 2 else honest_train)(message)

    overrides = {"strategy.name": "similarity-weighted", "strategy.min-train-nodes": 2}
    grid = AnsweringGrid(train={3: fails_in_round_2})
    done = federate(tmp_path, grid, **overrides, **{"num-server-rounds": 2})
    files = done.run_dir / rundir.STRATEGY_STATE / "mixtures"
    assert sorted(p.name for p in files.iterdir()) == ["2-r1.npy"]
    state = load_file(done.run_dir / rundir.CHECKPOINT / "strategy.safetensors")
    assert sorted(k for k in state if k.startswith("mixture/")) == ["mixture/0", "mixture/1"]
    np.testing.assert_array_equal(state[INDEX_KEY], [[0, 2, 0], [1, 2, 0], [2, 1, 1]])
    resumed = federate(
        tmp_path,
        AnsweringGrid(),
        **overrides,
        **{"num-server-rounds": 3, "resume": True},
    )
    assert resumed.rounds_completed == 3
    ckpt = load_file(resumed.run_dir / rundir.CHECKPOINT / "strategy.safetensors")
    # round 3 had all three clients: every mixture is in the checkpoint, none on disk
    assert ckpt[INDEX_KEY][:, 2].tolist() == [0, 0, 0]
    # the round-1 file is kept while the fallback checkpoint (round 2's) names it
    assert [p.name for p in files.iterdir()] == ["2-r1.npy"]


@pytest.mark.usefixtures("server_task_identity")
@pytest.mark.parametrize("name", ["similarity-weighted", "clustered"])
def test_a_resumed_personalised_run_ends_where_a_clean_run_does(tmp_path, name):
    """Node ids change when a run restarts, so a resumed strategy holds every client's
    adapter but knows no node: it asks the sampled nodes which client they host (once) and
    sends each its own adapter, as the uninterrupted run does. Without asking, every client
    got the global adapter in the first resumed round and the runs parted."""
    overrides = {"strategy.name": name, "strategy.min-train-nodes": 2}
    clean_grid = AnsweringGrid()
    clean = federate(
        tmp_path, clean_grid, run_name="clean", **overrides, **{"num-server-rounds": 3}
    )
    assert clean_grid.asked == []  # never interrupted: every client with an adapter replied
    federate(tmp_path, AnsweringGrid(), run_name="k", **overrides, **{"num-server-rounds": 2})
    resumed_grid = AnsweringGrid()
    resumed = federate(
        tmp_path,
        resumed_grid,
        run_name="k",
        **overrides,
        **{"num-server-rounds": 3, "resume": True},
    )
    for key, value in to_numpy(clean.arrays).items():
        np.testing.assert_array_equal(to_numpy(resumed.arrays)[key], value)
    assert sorted(resumed_grid.asked) == [1, 2, 3]  # once each, in sampling order


def _identity(value):
    def answer(message):
        from flwr.app import Message, MetricRecord, RecordDict

        return Message(
            RecordDict({"metrics": MetricRecord({"client-id": value})}), reply_to=message
        )

    return answer


def _no_metrics(message):
    from flwr.app import ArrayRecord, Message, RecordDict

    return Message(RecordDict({"metrics": ArrayRecord()}), reply_to=message)


@pytest.mark.usefixtures("server_task_identity")
@pytest.mark.parametrize(
    "answer",
    [_identity(-1), _identity(2**40), _identity(1.5), _identity([0]), _no_metrics],
    ids=["negative", "huge", "float", "list", "not metrics"],
)
def test_a_bad_answer_to_identify_is_ignored_and_the_node_gets_the_global_adapter(tmp_path, answer):
    from tests.server.federation_fakes import crashed

    overrides = {"strategy.name": "similarity-weighted", "strategy.min-train-nodes": 2}
    federate(tmp_path, AnsweringGrid(), run_name="k", **overrides, **{"num-server-rounds": 1})
    grid = AnsweringGrid(query={1: answer, 2: crashed})
    resumed = federate(
        tmp_path, grid, run_name="k", **overrides, **{"num-server-rounds": 2, "resume": True}
    )
    assert resumed.rounds_completed == 2 and sorted(grid.asked) == [1, 2, 3]


def _grid_fails(message):
    raise ConnectionError("the SuperLink went away")


@pytest.mark.usefixtures("server_task_identity")
def test_a_grid_that_fails_while_asking_does_not_end_the_run(tmp_path, caplog):
    overrides = {"strategy.name": "clustered", "strategy.min-train-nodes": 2}
    federate(tmp_path, AnsweringGrid(), run_name="k", **overrides, **{"num-server-rounds": 1})
    grid = AnsweringGrid(query=dict.fromkeys((1, 2, 3), _grid_fails))
    resumed = federate(
        tmp_path, grid, run_name="k", **overrides, **{"num-server-rounds": 2, "resume": True}
    )
    assert resumed.rounds_completed == 2
    assert "client ids failed" in caplog.text


def test_a_strategy_state_the_strategy_cannot_read_falls_back_to_the_previous_one(tmp_path, caplog):
    rundir.save_checkpoint(tmp_path, _ckpt(1, state={"n": np.array([1])}))
    rundir.save_checkpoint(tmp_path, _ckpt(2, state={"n": np.array([[1, 2], [3, 4]])}))
    read = []

    def restore(state):
        read.append(state["n"].item())  # ValueError for more than one element

    loaded = rundir.load_checkpoint(tmp_path, layout=LAYOUT, strategy="fedavg", restore=restore)
    assert loaded.server_round == 1 and read == [1]
    (line,) = [r.getMessage() for r in caplog.records if "Ignoring checkpoint" in r.getMessage()]
    assert "the strategy cannot read its state (ValueError" in line


@pytest.mark.usefixtures("server_task_identity")
@pytest.mark.parametrize("poisoned", [(rundir.CHECKPOINT,), (rundir.CHECKPOINT, rundir.PREVIOUS)])
def test_a_run_whose_strategy_state_cannot_be_read_resumes_from_what_can(tmp_path, poisoned):
    """CoBA's state holds its round count as a scalar; a checkpoint where it is a vector
    passes the file checks but not CoBA's own reading. The resume falls back to the previous
    checkpoint, or starts afresh (the strategy's half-read state reset) when neither can be
    read, and ends where a clean run does either way."""
    overrides = {"strategy.name": "coba"}
    clean = federate(
        tmp_path, AnsweringGrid(), run_name="clean", **overrides, **{"num-server-rounds": 3}
    )
    federate(tmp_path, AnsweringGrid(), run_name="k", **overrides, **{"num-server-rounds": 2})
    run_dir = tmp_path / "k"
    for name in poisoned:
        _rewrite(run_dir / name / "strategy.safetensors", **{"coba-rounds": np.arange(3)})
    resumed = federate(
        tmp_path,
        AnsweringGrid(),
        run_name="k",
        **overrides,
        **{"num-server-rounds": 3, "resume": True},
    )
    assert [m["round"] for m in rundir.read_metrics(resumed.run_dir)] == [1, 2, 3]
    for key, value in to_numpy(clean.arrays).items():
        np.testing.assert_array_equal(to_numpy(resumed.arrays)[key], value)
