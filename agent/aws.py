"""The one layer every AWS call of the agent goes through.

Clients are built once. boto3 is synchronous, so calls run in threads: short calls in a
bounded pool sized so heartbeats, log shipping and audit writes of every running job fit at
once; GetActivityTask long polls in daemon threads of their own, because a poll stays open
60 s and a pool thread would hold the interpreter at exit until it returns. Here live the
retry with backoff bounded by a deadline, the client-side throttle and the sorting of service
errors: a closed task token becomes `errors.TaskGone`, transient failures are retried,
anything else is raised to the caller.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, TypeVar

import boto3
import structlog
from asyncio_throttle.throttler import Throttler
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from agent import errors
from agent.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_stepfunctions import SFNClient
    from mypy_boto3_stepfunctions.type_defs import GetActivityTaskOutputTypeDef

log = structlog.get_logger(__name__)
T = TypeVar("T")

# The service closed this token: nothing more can be reported for the task.
TASK_GONE_CODES: Final = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
TRANSIENT_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "ProvisionedThroughputExceededException",
        "TransactionConflictException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
        "ServiceException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def error_code(exc: BaseException) -> str:
    """The service's error code of a ClientError, else the exception's class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """Worth another try: throttling, a 5xx, or the connection failing on the way."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(exc, BotoConnectionError | HTTPClientError)


def _sorted_errors(fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    """Run one call in a worker thread, turning a closed-token answer into TaskGone."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        if error_code(exc) in TASK_GONE_CODES:
            raise errors.TaskGone(error_code(exc)) from None
        raise


class Aws:
    """The agent's AWS clients and the way to call them. Build once; `close()` at the end."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Per job at most a heartbeat, a log batch and an audit or completion call are in
        # flight at once; the rest is start-up and the journal's re-sends.
        workers = 3 * settings.concurrency + 4
        base = Config(
            connect_timeout=settings.aws_connect_timeout_s,
            read_timeout=settings.aws_read_timeout_s,
            # Retries happen here, with our deadline; botocore's own would multiply them.
            retries={"total_max_attempts": 1},
            # Above the number of concurrent calls, or urllib3 discards and reconnects.
            max_pool_connections=workers + 2,
        )
        poll = base.merge(
            Config(
                read_timeout=settings.poll_read_timeout_s,
                max_pool_connections=settings.effective_pollers + 2,
            )
        )
        session = boto3.session.Session()
        self.sfn: SFNClient = session.client("stepfunctions", config=base)
        self._sfn_poll: SFNClient = session.client("stepfunctions", config=poll)
        self.logs: CloudWatchLogsClient = session.client("logs", config=base)
        self.dynamodb: DynamoDBClient = session.client("dynamodb", config=base)
        self.secretsmanager: SecretsManagerClient = session.client("secretsmanager", config=base)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aws")
        self._throttler = Throttler(rate_limit=settings.aws_max_calls_per_s, period=1.0)
        self._session = session
        self._base_config = base

    # Built on first use: only a host that is scaled in or looks up its tags needs them.
    @functools.cached_property
    def autoscaling(self) -> AutoScalingClient:
        return self._session.client("autoscaling", config=self._base_config)

    @functools.cached_property
    def ec2(self) -> EC2Client:
        return self._session.client("ec2", config=self._base_config)

    async def call(
        self, fn: Callable[..., T], /, *, deadline_s: float | None = None, **kwargs: Any
    ) -> T:
        """Call `fn(**kwargs)` (a client method) in a worker thread, retrying transient
        failures with jittered exponential backoff until `deadline_s` (default: the
        aws_call_deadline_s setting; 0 = one attempt). Raises errors.TaskGone for a closed
        task token, else the last error."""
        deadline = self._settings.aws_call_deadline_s if deadline_s is None else deadline_s
        loop = asyncio.get_running_loop()
        retrying = AsyncRetrying(
            stop=stop_after_delay(deadline),
            wait=wait_random_exponential(multiplier=0.2, max=10),
            retry=retry_if_exception(is_transient),
            before_sleep=functools.partial(_log_retry, getattr(fn, "__name__", "call")),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                async with self._throttler:
                    call = functools.partial(_sorted_errors, fn, kwargs)
                    return await loop.run_in_executor(self._executor, call)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def get_activity_task(self) -> GetActivityTaskOutputTypeDef:
        """One long poll of the activity, in a daemon thread so an open poll never holds up
        the process's exit. If the caller stops waiting (cancelled at the end of a drain) and
        the poll then returns a task, the task is failed back with Agent.ShuttingDown from
        that thread so the state machine retries it elsewhere at once."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[GetActivityTaskOutputTypeDef] = loop.create_future()
        abandoned = threading.Event()

        def deliver(result: Any, exc: BaseException | None) -> None:
            if future.cancelled():
                self._fail_back_in_thread(result)
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

        def poll() -> None:
            result: Any = None
            exc: BaseException | None = None
            try:
                result = self._sfn_poll.get_activity_task(
                    activityArn=self._settings.activity_arn,
                    workerName=self._settings.worker_name,
                )
            except (BotoCoreError, ClientError) as error:
                exc = error
            if abandoned.is_set():
                self._fail_back(result)
                return
            try:
                loop.call_soon_threadsafe(deliver, result, exc)
            except RuntimeError:  # the loop is closed: nobody will ever take this task
                self._fail_back(result)

        threading.Thread(target=poll, name="poll", daemon=True).start()
        try:
            return await future
        except asyncio.CancelledError:
            abandoned.set()
            raise

    def _fail_back_in_thread(self, result: Any) -> None:
        if result and result.get("taskToken"):
            threading.Thread(target=self._fail_back, args=(result,), daemon=True).start()

    def _fail_back(self, result: Any) -> None:
        token = result.get("taskToken") if result else None
        if not token:
            return
        try:
            self.sfn.send_task_failure(
                taskToken=token,
                error=errors.SHUTTING_DOWN,
                cause="The agent stopped before it could start this task.",
            )
            log.warning("abandoned_poll_task_failed_back")
        except (BotoCoreError, ClientError) as exc:
            log.warning("abandoned_poll_task_lost", error=error_code(exc) if exc else None)

    def close(self) -> None:
        """Stop the worker pool; calls still running finish on their own timeouts."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _log_retry(call: str, state: Any) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info(
        "aws_call_retry",
        call=call,
        attempt=state.attempt_number,
        error=error_code(exc) if exc else None,
    )
