"""The fedcolora ``ClientApp``: local QLoRA with CoLoRA's private Sigma_k.

Only the shared adapter travels. Handlers stay thin; the work is in ``client.rounds``.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.rounds import evaluate_round, train_round
from client.runtime import client_data, model_runtime
from colora.wire import to_record, to_torch
from runconfig import parse_run_config

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
logging.getLogger("httpx").setLevel(logging.WARNING)  # Flower's log shipping is noise here

app = ClientApp()


def _setup(msg: Message, context: Context):
    cfg = parse_run_config(context.run_config)
    runtime = model_runtime(cfg)
    data = client_data(cfg, dict(context.node_config), runtime.tokenizer)
    arrays: ArrayRecord = msg.content["arrays"]
    return cfg, runtime, data, to_torch(arrays), msg.content["config"]


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, runtime, data, shared, config = _setup(msg, context)
    new_shared, metrics = train_round(
        cfg, runtime, data, shared,
        server_round=int(config["server-round"]),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
    )
    content = RecordDict({"arrays": to_record(new_shared), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, runtime, data, shared, config = _setup(msg, context)
    metrics = evaluate_round(cfg, runtime, data, shared, server_round=int(config["server-round"]))
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
