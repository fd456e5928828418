"""FedAdam: one server step from the arrays sent, with moments that survive a restart."""

import numpy as np

from colora.wire import to_numpy
from strategies.maths.averaging import weighted_average
from strategies.maths.server_opt import fedadam_step
from tests.strategies.fakes import FakeGrid, lora_state, metrics, strategy, train_round

HYPER = {
    "server-learning-rate": 0.1,
    "server-beta1": 0.9,
    "server-beta2": 0.99,
    "server-epsilon": 0.001,
}


def _round(fed, server_round, x, updates):
    def update(sent):
        node = sent.metadata.dst_node_id
        return updates[node], metrics(node, n=node)

    return train_round(fed, server_round, x, FakeGrid(updates), update)[2]


def check_server_step(name, step):
    rng = np.random.default_rng(0)
    x0 = lora_state(rng)
    rounds = [{1: lora_state(rng), 3: lora_state(rng)} for _ in range(2)]
    fed = strategy(name, **HYPER)
    x1 = to_numpy(_round(fed, 1, x0, rounds[0]))
    mean = weighted_average([rounds[0][1], rounds[0][3]], [1, 3])
    delta = {k: mean[k].astype(np.float64) - x0[k] for k in x0}
    kw = {"eta": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.001}
    expected, state = step(x0, delta, None, **kw)
    for key in x0:
        np.testing.assert_allclose(x1[key], expected[key], rtol=1e-6)

    resumed = strategy(name, **HYPER)  # a restarted server, loading the checkpointed moments
    resumed.load_state(fed.state_arrays())
    x2 = to_numpy(_round(resumed, 2, x1, rounds[1]))
    mean = weighted_average([rounds[1][1], rounds[1][3]], [1, 3])
    delta = {k: mean[k].astype(np.float64) - x1[k] for k in x1}
    expected, _ = step(x1, delta, state, **kw)
    for key in x0:
        np.testing.assert_allclose(x2[key], expected[key], rtol=1e-6)
    assert int(resumed.state_arrays()["opt/step"]) == 2


def test_fedadam_steps_from_the_sent_arrays_and_resumes():
    check_server_step("fedadam", fedadam_step)
