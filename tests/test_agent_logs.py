"""The agent's logs are JSON lines and never carry a token or a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from agent import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure(stream=stream, level="debug")
    yield stream
    logs.configure()


def _events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_registered_values_are_scrubbed_everywhere(captured: io.StringIO) -> None:
    token = "AAAAKgAAAAIAAAAAAAAAA-token-value-zzz"
    password = "s3cr3t-Pa55"
    logs.redactor.add(token)
    logs.redactor.add(password)
    try:
        log = structlog.get_logger("test")
        log.info("plain", detail=f"token={token}", nested={"list": [password, 1]})
        log.info("keys", task_token="whatever", PGPASSWORD="x", password="y")
        try:
            raise RuntimeError(f"failed with {token} and {password}")
        except RuntimeError:
            log.exception("boom")
        logging.getLogger("botocore.test").warning("library says %s", password)
    finally:
        logs.redactor.discard(token)
        logs.redactor.discard(password)
    text = captured.getvalue()
    assert token not in text and password not in text
    events = _events(captured)
    assert [e["event"] for e in events[:3]] == ["plain", "keys", "boom"]
    assert events[0]["detail"] == "token=[redacted]"
    assert events[1]["task_token"] == events[1]["PGPASSWORD"] == "[redacted]"
    assert "RuntimeError" in str(events[2]["exception"])
    assert events[3]["event"] == "library says [redacted]"
    assert all("timestamp" in e and "level" in e for e in events)


def test_token_id_is_stable_and_short() -> None:
    assert logs.token_id("abc") == logs.token_id("abc") != logs.token_id("abd")
    assert len(logs.token_id("abc")) == 12
