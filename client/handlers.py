"""What the ClientApp's ``train`` and ``evaluate`` handlers do: load the model and this
client's data, then run ``client.rounds`` on the shared adapter the message carries.

``client.client_app`` imports this module on the first message that trains or evaluates, not
with itself: torch, transformers and PEFT are ~10 of the ~12 CPU-s a fresh process spends
importing, and a SuperNode starts a process per message, many of which never reach the model
(SecAgg+'s setup, key-sharing and unmasking stages, answered by ``client.privacy.secagg_mod``
without calling ``train``; the ``identify`` query).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict

from client.rounds import RoundPlan, evaluate_round, train_round
from client.runtime import client_data, model_runtime
from colora import contract as keys
from colora.wire import to_record, to_torch
from runconfig import parse_run_config


def _node_config(context: Context, config) -> dict:
    """The node's config, or the pooled-data identity of the centralized baseline."""
    node = dict(context.node_config)
    if config.get(keys.POOLED_DATA, False) and "partition-id" in node:
        # Centralized baseline (simulation only): this node holds every partition's examples.
        return {"client-id": node["partition-id"]}
    return node


def _setup(msg: Message, context: Context):
    cfg = parse_run_config(context.run_config)
    config = msg.content["config"]
    runtime = model_runtime(cfg)
    data = client_data(cfg, _node_config(context, config), runtime.tokenizer)
    arrays: ArrayRecord = msg.content["arrays"]
    merge = msg.content.array_records.get(keys.MERGE_RECORD, ArrayRecord())
    return cfg, runtime, data, to_torch(arrays), RoundPlan.from_config(config, to_torch(merge))


def train(msg: Message, context: Context) -> Message:
    cfg, runtime, data, shared, plan = _setup(msg, context)
    new_shared, metrics = train_round(cfg, runtime, data, shared, plan)
    content = RecordDict({"arrays": to_record(new_shared), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    cfg, runtime, data, shared, plan = _setup(msg, context)
    metrics = evaluate_round(cfg, runtime, data, shared, plan)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
