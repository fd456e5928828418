"""benchmarks/scale_memory.py: one JSON line per round and issue 13's flatness check."""

import json

from benchmarks import scale_memory

GIB = 1024**3


def _run_dir(tmp_path, rss_by_round, failed_round=None):
    rounds = [
        {
            "round": r,
            "seconds": 10.0 + r,
            "elapsed_seconds": 20.0 * r,
            "peak_rss_bytes": int(rss * GIB),
            "peak_pss_bytes": int(rss * GIB * 0.8),
        }
        for r, rss in enumerate(rss_by_round, start=1)
    ]
    summary = {"rounds": rounds, "attempts": [{"max_processes": 12}], "wall_seconds": 99.0}
    (tmp_path / "run_summary.json").write_text(json.dumps(summary))
    records = [
        {"round": r, "failed": True, "reason": "too few replies"}
        if r == failed_round
        else {"round": r, "train": [{"client-id": 1}, {"client-id": 2}]}
        for r in range(1, len(rss_by_round) + 1)
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
    return tmp_path


def _lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_flat_memory_meets_the_target(tmp_path, capsys):
    scale_memory.print_json_lines(_run_dir(tmp_path, [4.0, 3.0, 3.2, 3.25]), "scale")
    *rounds, check = _lines(capsys)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert rounds[1] == {
        "experiment": "scale",
        "round": 2,
        "seconds": 12.0,
        "clients_trained": 2,
        "failed": None,
        "elapsed_seconds": 40.0,
        "peak_tree_rss_bytes": 3 * GIB,
        "peak_tree_pss_bytes": int(3 * GIB * 0.8),
    }
    assert check["ratio"] == 1.083 and check["met"]  # 3.25 / 3.0; round 1 (start-up) ignored


def test_growing_memory_and_failed_rounds_are_reported(tmp_path, capsys):
    scale_memory.print_json_lines(_run_dir(tmp_path, [3.0, 3.0, 3.5], failed_round=3), "scale")
    *rounds, check = _lines(capsys)
    assert rounds[2]["failed"] == "too few replies" and rounds[2]["clients_trained"] == 0
    assert check["ratio"] == round(3.5 / 3.0, 3) and not check["met"]
