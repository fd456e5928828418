"""fedcolora's ClientApp, except that simulated client 2 crashes in every train round."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client import client_app as real

app = ClientApp()
CRASHING_PARTITION = 2


@app.train()
def train(msg: Message, context: Context) -> Message:
    if context.node_config.get("partition-id") == CRASHING_PARTITION:
        raise RuntimeError("injected fault: client 2 crashed mid-round")
    return real.train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return real.evaluate(msg, context)
