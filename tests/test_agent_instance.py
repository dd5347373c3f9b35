"""IMDSv2 against a fake metadata server on 127.0.0.1 (never the real 169.254.169.254): the
instance id, and whatever garbage the endpoint may answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from fleet_helpers import IMDS_TOKEN, FakeImds, fake_imds

from agent.imds import MAX_ANSWER_BYTES, Imds, ImdsError
from agent.instance import InstanceMetadataError, fetch_instance_id, resolve_instance_id
from agent.settings import Settings

ARN = "arn:aws:states:us-east-1:123456789012:activity:rsql-jobs"


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    with fake_imds("i-0123456789abcdef0") as server:
        yield server


def test_imdsv2_token_then_instance_id(imds: FakeImds) -> None:
    assert fetch_instance_id(imds.url, timeout_s=2) == "i-0123456789abcdef0"
    assert imds.requests == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/meta-data/instance-id"),
    ]


def test_a_session_token_is_reused(imds: FakeImds) -> None:
    session = Imds(imds.url, timeout_s=2)
    assert session.get("instance-id") == "i-0123456789abcdef0"
    assert session.get("spot/instance-action") is None  # 404: no notice
    assert [method for method, _ in imds.requests] == ["PUT", "GET", "GET"]


def test_unreachable_metadata_is_a_clear_error() -> None:
    with pytest.raises(InstanceMetadataError, match=r"instance metadata at http://127\.0\.0\.1:9"):
        fetch_instance_id("http://127.0.0.1:9", timeout_s=1)


def _not_http(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n")
    handler.close_connection = True


def _cut_short(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    handler.wfile.write(b"i-0")
    handler.close_connection = True


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (_not_http, "BadStatusLine"),
        (_cut_short, "IncompleteRead"),
        ((200, b"\xff\xfe\x00binary"), "answer is not text"),
        ((200, b"x" * (MAX_ANSWER_BYTES + 1)), "answer longer than"),
        ((500, b"Internal Server Error"), "HTTP 500"),
    ],
)
def test_garbage_is_one_line_naming_the_path(imds: FakeImds, answer: object, problem: str) -> None:
    imds.set("instance-id", answer)  # type: ignore[arg-type]
    with pytest.raises(ImdsError) as error:
        Imds(imds.url, timeout_s=2).get("instance-id")
    message = str(error.value)
    assert message.startswith(f"instance metadata at {imds.url} (instance-id): ")
    assert problem in message and "\n" not in message and len(message) < 300


def test_a_refused_token_and_a_non_instance_id(imds: FakeImds) -> None:
    imds.set("instance-id", "<html>captive portal</html>")
    with pytest.raises(InstanceMetadataError, match="not an instance id"):
        fetch_instance_id(imds.url, timeout_s=2)
    session = Imds(imds.url, timeout_s=2)
    session._token, session._token_expires = "stale-" + IMDS_TOKEN, float("inf")
    assert session.get("spot/instance-action") is None  # 401, new session, 404
    wrong = Imds(imds.url + "/wrong-prefix", timeout_s=2)
    with pytest.raises(ImdsError, match=r"\(api/token\): no session token \(HTTP 400\)"):
        wrong.get("instance-id")


def test_resolve_prefers_the_setting_then_imds_then_worker_name(
    imds: FakeImds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("RSQL_AGENT_INSTANCE_ID", raising=False)
    common = {"activity_arn": ARN, "script_dir": tmp_path, "worker_name": "host-7"}
    configured = Settings.load(instance_id="i-configured", imds_endpoint_url=imds.url, **common)
    assert asyncio.run(resolve_instance_id(configured)) == "i-configured"
    assert imds.requests == []
    # The standard switch only turns off the real endpoint, not a fake one.
    from_fake = Settings.load(imds_endpoint_url=imds.url, **common)
    assert asyncio.run(resolve_instance_id(from_fake)) == "i-0123456789abcdef0"
    # With the real endpoint and metadata disabled: no request at all, the host name.
    real = Settings.load(**common)
    assert asyncio.run(resolve_instance_id(real)) == "host-7"
    broken = Settings.load(imds_endpoint_url="http://127.0.0.1:9", imds_timeout_s=0.5, **common)
    assert asyncio.run(resolve_instance_id(broken)) == "host-7"
    imds.set("instance-id", _not_http)
    assert asyncio.run(resolve_instance_id(from_fake)) == "host-7"  # garbage: no crash
