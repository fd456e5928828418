"""The fedcolora ``ClientApp``: local QLoRA with CoLoRA's private Sigma_k.

Only the shared adapter travels. Handlers stay thin; the work is in ``client.rounds``, steered
by the strategy's keys in the message's ConfigRecord (see ``strategies.protocol``).
"""

from __future__ import annotations

import logging

from colora.startup import collector_paused

with collector_paused():  # every message's process pays these imports (colora.startup)
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from client.compression import codec_mod
    from client.data import client_identity
    from client.privacy import local_dp_mod, secagg_mod
    from client.rounds import RoundPlan, evaluate_round, train_round
    from client.runtime import client_data, model_runtime
    from colora import contract as keys
    from colora.wire import to_record, to_torch
    from runconfig import parse_run_config

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
logging.getLogger("httpx").setLevel(logging.WARNING)  # Flower's log shipping is noise here

app = ClientApp()


def _node_config(context: Context, config) -> dict:
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


# The codec outermost: everything inside sees float32 (comm.*; SecAgg+ runs lossless only).
# SecAgg+ next: it masks whatever the local-DP mod inside it has clipped and noised.
@app.train(mods=[codec_mod, secagg_mod, local_dp_mod])
def train(msg: Message, context: Context) -> Message:
    cfg, runtime, data, shared, plan = _setup(msg, context)
    new_shared, metrics = train_round(cfg, runtime, data, shared, plan)
    content = RecordDict({"arrays": to_record(new_shared), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.query("identify")
def identify(msg: Message, context: Context) -> Message:
    """Which client this node hosts: the server asks after a resume, when node ids are new
    but its per-client state is keyed by client id (``strategies.updates.SendsPersonal``).
    Reads only the node config: no model, no data."""
    cfg = parse_run_config(context.run_config)
    ident = client_identity(_node_config(context, {}), cfg)
    metrics = MetricRecord({keys.CLIENT_ID: ident.client_id})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


@app.evaluate(mods=[codec_mod])
def evaluate(msg: Message, context: Context) -> Message:
    cfg, runtime, data, shared, plan = _setup(msg, context)
    metrics = evaluate_round(cfg, runtime, data, shared, plan)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
