"""IMDSv2 against a fake metadata server on 127.0.0.1 (never the real 169.254.169.254)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.instance import InstanceMetadataError, fetch_instance_id, resolve_instance_id
from agent.settings import Settings

ARN = "arn:aws:states:us-east-1:123456789012:activity:rsql-jobs"
TOKEN = "fake-imds-session-token"


class FakeImds(BaseHTTPRequestHandler):
    """Answers like IMDSv2 with HttpTokens=required: no token, no metadata."""

    requests: list[tuple[str, str, dict[str, str]]] = []

    def do_PUT(self) -> None:
        self.requests.append(("PUT", self.path, dict(self.headers)))
        if self.path == "/latest/api/token" and self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self._answer(200, TOKEN)
        else:
            self._answer(400, "bad request")

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, dict(self.headers)))
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self._answer(401, "unauthorized")
        elif self.path == "/latest/meta-data/instance-id":
            self._answer(200, "i-0123456789abcdef0")
        else:
            self._answer(404, "not found")

    def _answer(self, status: int, body: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def imds() -> Iterator[str]:
    FakeImds.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_imdsv2_token_then_instance_id(imds: str) -> None:
    assert fetch_instance_id(imds, timeout_s=2) == "i-0123456789abcdef0"
    assert [(m, p) for m, p, _ in FakeImds.requests] == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/meta-data/instance-id"),
    ]
    headers = {k.lower(): v for k, v in FakeImds.requests[1][2].items()}
    assert headers["x-aws-ec2-metadata-token"] == TOKEN


def test_unreachable_metadata_is_a_clear_error() -> None:
    with pytest.raises(InstanceMetadataError, match=r"instance metadata at http://127\.0\.0\.1:9"):
        fetch_instance_id("http://127.0.0.1:9", timeout_s=1)


def test_resolve_prefers_the_setting_then_imds_then_worker_name(
    imds: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("RSQL_AGENT_INSTANCE_ID", raising=False)
    common = {"activity_arn": ARN, "script_dir": tmp_path, "worker_name": "host-7"}
    configured = Settings.load(instance_id="i-configured", imds_endpoint_url=imds, **common)
    assert asyncio.run(resolve_instance_id(configured)) == "i-configured"
    assert FakeImds.requests == []
    # The standard switch only turns off the real endpoint, not a fake one.
    from_fake = Settings.load(imds_endpoint_url=imds, **common)
    assert asyncio.run(resolve_instance_id(from_fake)) == "i-0123456789abcdef0"
    # With the real endpoint and metadata disabled: no request at all, the host name.
    real = Settings.load(**common)
    assert asyncio.run(resolve_instance_id(real)) == "host-7"
    broken = Settings.load(imds_endpoint_url="http://127.0.0.1:9", imds_timeout_s=0.5, **common)
    assert asyncio.run(resolve_instance_id(broken)) == "host-7"
