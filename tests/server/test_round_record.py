"""The typed round record: the strategy's log sits under ``strategy`` and overwrites nothing."""

from __future__ import annotations

import json

from server.reports import failed_record, round_record
from server.round_record import FAILED_KEYS, RoundRecord, strategy_log


def test_a_strategy_key_named_like_a_core_key_stays_under_strategy():
    record = round_record(
        3, seconds=1.23456, train_replies=[], rejected=[], eval_replies=[], bytes_down=10,
        bytes_up=20, strategy={"round": 99, "bytes_up": -1, "clusters": {"0": 1}},
    )  # fmt: skip
    line = json.loads(json.dumps(record.to_json()))
    assert line["round"] == 3 and line["bytes_up"] == 20 and line["seconds"] == 1.235
    assert line["strategy"] == {"round": 99, "bytes_up": -1, "clusters": {"0": 1}}
    assert strategy_log(line)["clusters"] == {"0": 1}
    # Absent entries are left out; a successful round carries no failed/reason keys.
    assert not {"privacy", "central_dp", "failed", "reason"} & set(line)
    assert all(key == key.lower() and "-" not in key for key in line)  # one key style


def test_a_failed_round_has_its_reason_and_rejections_only():
    class Rejected:
        node_id, reason = 7, "bad bytes"

    line = failed_record(2, seconds=0.5, reason="too few", rejected=[Rejected()]).to_json()
    assert tuple(line) == FAILED_KEYS
    assert line["failed"] is True and line["reason"] == "too few"
    assert line["rejected"] == [{"node_id": 7, "reason": "bad bytes"}]
    assert strategy_log(line) == {}


def test_central_dp_and_privacy_are_core_fields():
    line = RoundRecord(
        round=1, seconds=0.0, central_dp={"clients": 3}, privacy={"delta_round": 1e-5}
    )
    assert line.to_json()["central_dp"] == {"clients": 3}
    assert line.to_json()["privacy"] == {"delta_round": 1e-5}
