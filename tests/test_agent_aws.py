"""The AWS call layer: which errors are retried, for how long, and how a closed task token
is reported. The callee is a plain function standing in for a client method."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.validate import ParamValidationDecorator

from agent import errors
from agent.aws import Aws, error_code, is_transient
from agent.settings import Settings

ARN = "arn:aws:states:us-east-1:123456789012:activity:rsql-jobs"


def _client_error(code: str, status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "SomeOperation")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_client_error("ThrottlingException"), True),
        (_client_error("ProvisionedThroughputExceededException"), True),
        (_client_error("Whatever", 503), True),
        (_client_error("Whatever", 429), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), True),
        (_client_error("ValidationException"), False),
        (_client_error("AccessDeniedException", 403), False),
        (_client_error("TaskTimedOut"), False),
    ],
)
def test_transient_errors(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_error_code() -> None:
    assert error_code(_client_error("TaskTimedOut")) == "TaskTimedOut"
    assert error_code(ValueError("x")) == "ValueError"


@pytest.fixture
def aws(tmp_path: Path) -> Any:
    settings = Settings.load(activity_arn=ARN, script_dir=tmp_path, aws_call_deadline_s=1)
    layer = Aws(settings)
    yield layer
    layer.close()


class Flaky:
    """Fails with `errors_` in turn, then answers."""

    def __init__(self, *errors_: BaseException) -> None:
        self.errors = list(errors_)
        self.calls = 0

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"ok": kwargs}


def test_transient_failures_are_retried(aws: Aws) -> None:
    callee = Flaky(_client_error("ThrottlingException"), _client_error("InternalFailure", 500))
    assert asyncio.run(aws.call(callee, deadline_s=10, a=1)) == {"ok": {"a": 1}}
    assert callee.calls == 3


def test_other_failures_are_not(aws: Aws) -> None:
    callee = Flaky(_client_error("ValidationException"))
    with pytest.raises(ClientError):
        asyncio.run(aws.call(callee))
    assert callee.calls == 1


def test_retries_stop_at_the_deadline(aws: Aws) -> None:
    callee = Flaky(*[_client_error("InternalFailure", 500)] * 1000)
    started = time.monotonic()
    with pytest.raises(ClientError):
        asyncio.run(aws.call(callee, deadline_s=0.5))
    assert 0.5 <= time.monotonic() - started < 15
    assert 1 < callee.calls < 1000
    one = Flaky(*[_client_error("ThrottlingException")] * 10)
    with pytest.raises(ClientError):
        asyncio.run(aws.call(one, deadline_s=0))
    assert one.calls == 1


@pytest.mark.parametrize(
    "throttle", [_client_error("ThrottlingException"), _client_error("SlowDown", 429)]
)
def test_throttling_is_retried_past_the_deadline(aws: Aws, throttle: ClientError) -> None:
    """A throttle never turns into a failure: it is retried for as long as it lasts."""
    callee = Flaky(*[throttle] * 4)
    assert asyncio.run(aws.call(callee, deadline_s=0.01, a=1)) == {"ok": {"a": 1}}
    assert callee.calls == 5
    assert aws.calls["Call"] == 5  # every attempt is counted (a callable without a name)


def test_each_api_keeps_its_client_side_rate(tmp_path: Path) -> None:
    """Calls over an API's rate wait for a token (never refused); other APIs are not held."""
    settings = Settings.load(
        activity_arn=ARN, script_dir=tmp_path, aws_rates_per_s={"CreateLogStream": 20}
    )
    layer = Aws(settings)

    def create_log_stream(**kwargs: Any) -> dict[str, Any]:
        return {}

    def update_item(**kwargs: Any) -> dict[str, Any]:
        return {}

    async def burst(fn: Any, count: int) -> float:
        started = time.monotonic()
        await asyncio.gather(*(layer.call(fn) for _ in range(count)))
        return time.monotonic() - started

    try:
        # 20 saved up, then 20 a second: the last 10 of 30 take at least half a second.
        assert asyncio.run(burst(create_log_stream, 30)) >= 0.45
        assert layer.calls["CreateLogStream"] == 30
        assert asyncio.run(burst(update_item, 30)) < 0.45  # 100 a second by default
    finally:
        layer.close()


@pytest.mark.parametrize("code", ["TaskTimedOut", "TaskDoesNotExist", "InvalidToken"])
def test_a_closed_token_is_task_gone(aws: Aws, code: str) -> None:
    callee = Flaky(_client_error(code))
    with pytest.raises(errors.TaskGone, match=code):
        asyncio.run(aws.call(callee))
    assert callee.calls == 1


def test_clients_are_configured_for_long_polls_and_concurrency(tmp_path: Path) -> None:
    settings = Settings.load(activity_arn=ARN, script_dir=tmp_path, concurrency=8, pollers=3)
    layer = Aws(settings)
    try:
        poll = layer._sfn_poll.meta.config
        assert poll.read_timeout >= 65  # above the service's 60 s long poll
        assert poll.max_pool_connections > settings.effective_pollers
        short = layer.sfn.meta.config
        assert short.read_timeout == settings.aws_read_timeout_s
        # More connections than calls that can be in flight at once (the pool's threads).
        assert short.max_pool_connections > layer._executor._max_workers >= 3 * 8
        # botocore does not retry on its own: the layer's deadline is the only one.
        assert short.retries["total_max_attempts"] == 1
        # The hot-path clients skip botocore's parameter validation; the start-up one keeps it.
        assert not isinstance(layer.sfn._serializer, ParamValidationDecorator)
        assert not isinstance(layer.logs._serializer, ParamValidationDecorator)
        assert isinstance(layer.secretsmanager._serializer, ParamValidationDecorator)
        # One connection per poll that can be open at once: a free slot each, while busy.
        assert poll.max_pool_connections > settings.effective_max_pollers == 8
    finally:
        layer.close()
