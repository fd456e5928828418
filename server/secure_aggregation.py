"""A SecAgg+ training round: Flower's ``SecAggPlusWorkflow`` inside the fedcolora round loop.

SecAgg+ (Bell et al. 2020, https://arxiv.org/abs/2009.08294) lets the server learn only the
example-weighted *sum* of the clients' uploads. Flower ships it as a legacy workflow that drives
a legacy ``Strategy`` (``configure_fit``/``aggregate_fit`` over ``Parameters``); this module
wraps the messages a fedcolora strategy's ``configure_train`` produced in such a strategy, runs
the four SecAgg+ stages over the same ``Grid``, and hands back what the strategy's own
``aggregate_train`` expects.

Clients upload their *update* (see ``client.privacy``), so the workflow yields the weighted
mean update ū. Each client's reply is then stood in for by ``global + ū`` with its own metrics,
as Flower's workflow does for legacy strategies: any strategy that only needs the weighted mean
(FedAvg, FedProx, FedAdam/FedYogi's server step, FFA-/FedSA-LoRA's factor averages) aggregates
exactly as without SecAgg+. Strategies that need each update refuse SecAgg+ when they are built
(``strategies.registry``).

What the server cannot do under SecAgg+: screen an individual update. Clients refuse to upload
a non-finite update, and the mean is checked here; a client that uploads a finite but wrong
update is indistinguishable from an honest one, which is the point of secure aggregation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from colora.contract import SECAGG_KEYS, SECAGG_MAX_WEIGHT
from runconfig.schema import PrivacySettings
from server.screening import Rejection

log = logging.getLogger(__name__)

# SecAgg+ uploads each client's update times n_k / MAX_WEIGHT, quantised into [-clip, clip]
# with stochastic rounding. Flower's defaults (2^22 levels in a 2^32 modulus) lose ~0.5% of a
# 1e-3 LoRA update at these weight ratios; 2^30 levels (its int32 rounding allows < 2^31) in a
# 2^40 modulus keep the error near 1e-4 relative and still leave 2^10 clients of headroom.
CLIPPING_RANGE = 0.1
QUANTIZATION_RANGE = 2**30
MODULUS_RANGE = 2**40
MAX_WEIGHT = SECAGG_MAX_WEIGHT  # above any client's example count: n_k / max stays <= 1


def _count(value: float) -> int | float:
    """A config number as Flower wants it: a fraction as a float, a count as an int."""
    return float(value) if value <= 1 else int(value)


class _Relay(Strategy):
    """The legacy strategy the workflow drives: it replays the fedcolora strategy's messages
    and keeps the workflow's results instead of aggregating them itself."""

    def __init__(self, grid: Grid, messages: list[Message]) -> None:
        self.grid, self.messages = grid, messages
        self.results: list = []
        self.failures: list = []

    def configure_fit(self, server_round, parameters, client_manager):
        instructions = []
        for message in self.messages:
            arrays: ArrayRecord = message.content["arrays"]
            config = dict(message.content["config"]) | {SECAGG_KEYS: ",".join(arrays)}
            params = ndarrays_to_parameters([a.numpy() for a in arrays.values()])
            proxy = GridClientProxy(message.metadata.dst_node_id, self.grid, run_id=0)
            instructions.append((proxy, FitIns(params, config)))
        return instructions

    def aggregate_fit(self, server_round, results, failures):
        self.results, self.failures = list(results), list(failures)
        return (results[0][1].parameters if results else None), {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secure_round(
    grid: Grid,
    messages: Iterable[Message],
    server_round: int,
    privacy: PrivacySettings,
    timeout: float,
) -> tuple[list[Message], list[Message], list[Rejection]]:
    """One SecAgg+ train round: ``(sent, stand-in replies, rejected)``.

    Stand-in replies carry ``global + mean update`` and each client's own metrics; they are
    empty when the protocol did not complete (too few clients, a non-finite mean).
    """
    sent = list(messages)
    if not sent:
        return sent, [], []
    relay = _Relay(grid, sent)
    # Every node was sent the same adapter: only strategies that broadcast one run here.
    global_ = {k: a.numpy() for k, a in sent[0].content["arrays"].items()}
    keys = list(global_)
    state = RecordDict(
        {
            MAIN_CONFIGS_RECORD: ConfigRecord({Key.CURRENT_ROUND: server_round}),
            MAIN_PARAMS_RECORD: ArrayRecord(),
        }
    )
    context = LegacyContext(
        Context(run_id=0, node_id=0, node_config={}, state=state, run_config={}),
        config=ServerConfig(num_rounds=server_round),
        strategy=relay,
    )
    workflow = SecAggPlusWorkflow(
        num_shares=_count(privacy.secagg_num_shares),
        reconstruction_threshold=_count(privacy.secagg_threshold),
        max_weight=MAX_WEIGHT,
        clipping_range=CLIPPING_RANGE,
        quantization_range=QUANTIZATION_RANGE,
        modulus_range=MODULUS_RANGE,
        timeout=timeout,
    )
    workflow(grid, context)
    rejected = [Rejection(0, f"secure aggregation: {failure}") for failure in relay.failures]
    if not relay.results:
        return sent, [], rejected or [Rejection(0, "secure aggregation did not complete")]
    mean_update = parameters_to_ndarrays(relay.results[0][1].parameters)
    if len(mean_update) != len(keys) or not all(np.isfinite(u).all() for u in mean_update):
        bad = Rejection(0, "secure aggregation: non-finite or ill-shaped mean")
        return sent, [], [*rejected, bad]
    arrays = ArrayRecord(
        {
            k: Array((global_[k] + u.reshape(global_[k].shape)).astype(global_[k].dtype))
            for k, u in zip(keys, mean_update, strict=True)
        }
    )
    by_node = {message.metadata.dst_node_id: message for message in sent}
    replies = [
        # A reply "from" the node it stands in for, so reports and NodeClients see who trained.
        Message(
            RecordDict({"arrays": arrays, "metrics": MetricRecord(dict(fitres.metrics))}),
            reply_to=by_node[proxy.node_id],
        )
        for proxy, fitres in relay.results
    ]
    log.info("SecAgg+ round %d: aggregated %d masked updates", server_round, len(replies))
    return sent, replies, rejected
