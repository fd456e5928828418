"""The public face of the SuperLink, without Flower: ``deploy/start_proxy.sh`` in front of a
stand-in HTTPS upstream that records every path it receives.

Only the ten Fleet routes an authenticated SuperNode calls may reach the upstream, under their
normalised path; every other path (Control, Runtime, self-registration, docs, path tricks)
gets 403 from nginx and never reaches it. The end-to-end version, against a real SuperLink
and the ``flwr`` CLI, is in ``test_deployment.py``.
"""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from tests.deployment.federation import DEPLOY, FLEET_ROUTES, LocalFederation

REFUSED = [
    "/v1/control/list-runs",
    "/v1/control/register-node",
    "/v1/control/start-run",
    "/v1/runtime/get-nodes",
    "/v1/fleet/register-node",
    "/v1/fleet/unregister-node",
    "/v1/fleet/",
    "/v1/fleet/activate-node/",
    "/v1/fleet/activate-nodes",
    "/v1/FLEET/activate-node",
    "/docs",
    "/openapi.json",
    "/health",
    "/",
    "/v1/fleet/../control/list-runs",
    "/v1/fleet/activate-node/..%2f..%2fcontrol/list-runs",
    "/v1/fleet/activate-node%3f/../../control/list-runs",
    "/v1/fleet/%2e%2e/control/list-runs",
]


class _Recorder(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_POST(self):
        self.paths.append(self.path)
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    fed = LocalFederation(tmp_path_factory.mktemp("proxy"), Path("/nonexistent"))
    fed.script("gen_certs.sh", str(fed.certs))
    _Recorder.paths = []
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", fed.port), _Recorder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(fed.certs / "server.pem", fed.certs / "server.key")
    upstream.socket = context.wrap_socket(upstream.socket, server_side=True)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    try:
        fed.start_proxy()
        yield fed
    finally:
        fed.stop()
        upstream.shutdown()
        upstream.server_close()


def _post(fed: LocalFederation, raw_path: str, method: str = "POST") -> httpx.Response:
    with httpx.Client(verify=str(fed.certs / "ca.crt")) as client:
        url = f"https://127.0.0.1:{fed.public_port}/"
        request = client.build_request(method, url, content=b"x")
        request.url = request.url.copy_with(raw_path=raw_path.encode())  # sent as written
        return client.send(request)


@pytest.mark.parametrize("route", FLEET_ROUTES)
def test_fleet_routes_reach_the_superlink(proxy, route):
    response = _post(proxy, f"/v1/fleet/{route}")
    assert response.status_code == 200 and response.text == "ok"
    assert _Recorder.paths[-1] == f"/v1/fleet/{route}"


@pytest.mark.parametrize("path", REFUSED)
def test_everything_else_is_refused_before_the_superlink(proxy, path):
    seen = len(_Recorder.paths)
    response = _post(proxy, path)
    assert response.status_code == 403, (path, response.status_code)
    assert len(_Recorder.paths) == seen, f"{path} reached the upstream as {_Recorder.paths[-1]}"


def test_fleet_routes_take_post_only(proxy):
    assert _post(proxy, "/v1/fleet/get-run", method="GET").status_code == 403


def test_percent_encoded_fleet_route_goes_upstream_normalised(proxy):
    response = _post(proxy, "/v1/fleet/%61ctivate-node")
    assert response.status_code == 200
    assert _Recorder.paths[-1] == "/v1/fleet/activate-node"


def test_superlink_refuses_a_public_bind_address(tmp_path):
    done = subprocess.run(
        [str(DEPLOY / "start_superlink.sh")],
        env=LocalFederation(tmp_path, tmp_path).env(SUPERLINK_HOST="0.0.0.0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "would publish the Control API" in done.stderr
    assert "start_proxy.sh" in done.stderr
