"""A SuperNode starts a fresh ClientApp process per message: the messages that never reach the
model (SecAgg+'s setup stage, ``identify``) are answered without importing torch,
transformers or PEFT (client.client_app loads client.handlers on first use)."""

from __future__ import annotations

import json
import subprocess
import sys

from strategies.messages import IDENTIFY
from tests.conftest import REPO

HEAVY = ("torch", "transformers", "peft", "bitsandbytes")

SCRIPT = """
import json, sys
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.supercore.task_identity import TaskIdentity

from client.client_app import app
from tests.conftest import pyproject_defaults

TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
run_config = pyproject_defaults() | {"privacy.secure-aggregation": True}
context = Context(run_id=1, node_id=7, node_config={"client-id": 3, "tasks": "translation"},
                  state=RecordDict(), run_config=run_config)
setup = ConfigRecord({
    Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: 3, Key.SHARE_NUMBER: 3, Key.THRESHOLD: 2,
    Key.CLIPPING_RANGE: 8.0, Key.TARGET_RANGE: 1 << 22, Key.MOD_RANGE: 1 << 32,
    Key.MAX_WEIGHT: 1000.0,
})
replies = {
    "secagg-setup": app(Message(RecordDict({RECORD_KEY_CONFIGS: setup}), dst_node_id=7,
                                message_type=MessageType.TRAIN), context),
    "identify": app(Message(RecordDict({"config": ConfigRecord()}), dst_node_id=7,
                            message_type=sys.argv[2]), context),
}
print(json.dumps({
    "errors": {name: str(r.error) for name, r in replies.items() if r.has_error()},
    "loaded": [m for m in json.loads(sys.argv[1]) if m in sys.modules],  # after both replies
}))
"""


def test_secagg_setup_and_identify_are_answered_without_the_model_stack():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(HEAVY), IDENTIFY],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found == {"errors": {}, "loaded": []}
