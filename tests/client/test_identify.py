"""The ClientApp says which client its node hosts, from the node config alone (the server asks
after a resume: strategies.updates.SendsPersonal.identify)."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client.client_app import app
from strategies.messages import IDENTIFY, valid_client_id
from tests.conftest import pyproject_defaults

pytestmark = pytest.mark.usefixtures("server_task_identity")


def _ask(node_config: dict, tmp_path) -> Message:
    run_config = pyproject_defaults() | {"output-dir": str(tmp_path), "run-name": "id"}
    context = Context(
        run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=run_config
    )
    query = Message(RecordDict({"config": ConfigRecord()}), dst_node_id=7, message_type=IDENTIFY)
    return app(query, context)


@pytest.mark.parametrize(
    "node_config, client",
    [
        ({"partition-id": 4, "num-partitions": 6}, 4),  # simulation
        ({"client-id": 12, "tasks": "translation"}, 12),  # an organisation's SuperNode
    ],
)
def test_identify_answers_with_the_client_id_and_loads_nothing(
    tmp_path, monkeypatch, node_config, client
):
    def no_loading(*args, **kwargs):
        raise AssertionError("identify must not load the model or the data")

    monkeypatch.setattr("client.handlers.model_runtime", no_loading)
    monkeypatch.setattr("client.handlers.client_data", no_loading)
    reply = _ask(node_config, tmp_path)
    assert not reply.has_error()
    assert valid_client_id(reply) == client
    assert list(reply.content.metric_records) == ["metrics"] and not reply.content.array_records
