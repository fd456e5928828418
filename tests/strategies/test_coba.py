"""CoBa across clients: the hand-worked slow/fast case of test_maths_coba, driven by Messages."""

import numpy as np
from flwr.app import ConfigRecord

from colora.wire import to_numpy, to_record
from strategies.maths.averaging import weighted_average
from tests.strategies.fakes import FakeGrid, lora_state, metrics, reply, strategy, train_round

# test_maths_coba.test_slow_task_gains_weight: fast ℓ = [1, 0.8, 0.6], slow ℓ = [1, 0.9, 0.8]
# with W = 3 after a 2-round warm-up give ω_slow = σ(2·(2·0.6607564 − 1)) = 0.6554371.
LOSSES = {"fast": [2.0, 1.6, 1.2], "slow": [3.0, 2.7, 2.4]}
OMEGA_SLOW = 0.6554371
TASK = {1: "fast", 2: "slow"}


def _evaluate(coba, server_round, grid):
    sent = list(
        coba.configure_evaluate(
            server_round, to_record(lora_state(np.random.default_rng(0))), ConfigRecord(), grid
        )
    )
    replies = []
    for message in sent:
        node = message.metadata.dst_node_id
        loss = LOSSES[TASK[node]][server_round - 1]
        replies.append(reply(message, {}, metrics(node, n=4, **{f"eval-loss.{TASK[node]}": loss})))
    coba.aggregate_evaluate(server_round, replies)


def test_slow_task_clients_gain_weight_after_the_warmup():
    rng = np.random.default_rng(1)
    updates = {1: lora_state(rng), 2: lora_state(rng)}
    coba, grid = strategy("coba", **{"warmup-rounds": 2, "coba-window": 3}), FakeGrid([1, 2])

    def update(sent):
        node = sent.metadata.dst_node_id
        return updates[node], metrics(node, n=10, **{f"num-examples.{TASK[node]}": 10})

    _, _, new = train_round(coba, 1, lora_state(rng), grid, update)
    uniform = weighted_average([updates[1], updates[2]], [1, 1])
    for key, value in to_numpy(new).items():  # no history yet: uniform
        np.testing.assert_allclose(value, uniform[key], rtol=1e-6)
    for server_round in (1, 2, 3):
        _evaluate(coba, server_round, grid)
    _, _, new = train_round(coba, 4, lora_state(rng), grid, update)
    expected = weighted_average([updates[1], updates[2]], [1 - OMEGA_SLOW, OMEGA_SLOW])
    for key, value in to_numpy(new).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-5)
    log = coba.round_log(4)
    assert abs(log["coba_task_weights"]["slow"] - OMEGA_SLOW) < 1e-6
    assert log["coba_history"]["fast"] == [2.0, 1.6, 1.2]

    restarted = strategy("coba", **{"warmup-rounds": 2, "coba-window": 3})
    restarted.load_state(coba.state_arrays())
    assert restarted.history == coba.history and restarted.rounds_seen == 3
    assert restarted.task_weights(["fast", "slow"]) == coba.task_weights(["fast", "slow"])


def test_a_task_missing_from_a_round_repeats_its_last_loss():
    coba = strategy("coba")
    coba.history, coba.rounds_seen = {"fast": [2.0]}, 1
    grid = FakeGrid([1, 2])
    sent = list(
        coba.configure_evaluate(
            2, to_record(lora_state(np.random.default_rng(0))), ConfigRecord(), grid
        )
    )
    coba.aggregate_evaluate(2, [reply(sent[0], {}, metrics(2, **{"eval-loss.slow": 1.0}))])
    assert coba.history == {"fast": [2.0, 2.0], "slow": [1.0]}
    weights = coba.task_weights(["fast", "slow"])  # slow has no start point: the mean weight
    assert abs(sum(weights.values()) - 1) < 1e-12 and weights["fast"] == weights["slow"]
