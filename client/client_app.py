"""The fedcolora ``ClientApp``: local QLoRA with CoLoRA's private Sigma_k.

Only the shared adapter travels. Handlers stay thin; the work is in ``client.handlers`` and
``client.rounds``, steered by the strategy's keys in the message's ConfigRecord (see
``strategies.protocol``).
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType

from colora.startup import collector_paused

with collector_paused():  # every message's process pays these imports (colora.startup)
    from flwr.app import Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from client.compression import codec_mod
    from client.data import client_identity
    from client.privacy import local_dp_mod, secagg_mod
    from colora import contract as keys
    from runconfig import parse_run_config

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
logging.getLogger("httpx").setLevel(logging.WARNING)  # Flower's log shipping is noise here

app = ClientApp()


@functools.cache
def load_handlers() -> ModuleType:
    """``client.handlers``, imported by the first message that needs the model (see there)."""
    with collector_paused():
        from client import handlers
    return handlers


# The codec outermost: everything inside sees float32 (comm.*; SecAgg+ runs lossless only).
# SecAgg+ next: it masks whatever the local-DP mod inside it has clipped and noised.
@app.train(mods=[codec_mod, secagg_mod, local_dp_mod])
def train(msg: Message, context: Context) -> Message:
    return load_handlers().train(msg, context)


@app.query("identify")
def identify(msg: Message, context: Context) -> Message:
    """Which client this node hosts: the server asks after a resume, when node ids are new
    but its per-client state is keyed by client id (``strategies.updates.SendsPersonal``).
    Reads only the node config: no model, no data."""
    cfg = parse_run_config(context.run_config)
    ident = client_identity(dict(context.node_config), cfg)
    metrics = MetricRecord({keys.CLIENT_ID: ident.client_id})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


@app.evaluate(mods=[codec_mod])
def evaluate(msg: Message, context: Context) -> Message:
    return load_handlers().evaluate(msg, context)
