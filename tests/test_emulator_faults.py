"""The emulator's fault rate: a share of the agents' calls answered ThrottlingException or HTTP
500, in AWS's error shape (botocore parses them as the service's errors), counted; anyone
else's calls never. The middleware in front of a tiny WSGI app on a real socket."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from agent.aws import is_transient
from cloud.emulator.faults import STATS_PATH, FaultInjector


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _ok(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/x-amz-json-1.0")])
    return [b'{"activities": []}']


@pytest.fixture
def injector() -> Iterator[tuple[FaultInjector, str]]:
    app = FaultInjector(_ok, rate=0.5, seed=3)
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _client(url: str, user_agent_extra: str) -> Any:
    return boto3.client(
        "stepfunctions",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, user_agent_extra=user_agent_extra),
    )


def test_a_share_of_the_agents_calls_fail_as_aws_fails_under_load(
    injector: tuple[FaultInjector, str],
) -> None:
    app, url = injector
    agent = _client(url, "rsql-agent/0.1.0")
    codes = []
    for _ in range(60):
        try:
            agent.list_activities()
            codes.append("ok")
        except ClientError as exc:
            assert is_transient(exc)  # the agent retries both kinds
            codes.append(exc.response["Error"]["Code"])
    assert 15 < codes.count("ok") < 45
    assert {"ThrottlingException", "InternalFailure"} == set(codes) - {"ok"}
    assert app.counts["ThrottlingException"] == codes.count("ThrottlingException")
    assert app.counts["InternalFailure:ListActivities"] == codes.count("InternalFailure")
    # Anyone else (the operator's rsql-cloud, the state machine's own calls) is never hit.
    other = _client(url, "rsql-cloud")
    for _ in range(20):
        other.list_activities()
    with urllib.request.urlopen(url + STATS_PATH, timeout=5) as answer:
        assert json.loads(answer.read())["ThrottlingException"] == codes.count(
            "ThrottlingException"
        )
