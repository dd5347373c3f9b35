"""The one layer every AWS call of the agent goes through.

Clients are built once, their connection pools sized so a connection, once open, is reused
for the life of the agent. boto3 is synchronous, so calls run in threads: short calls in a
bounded pool sized so heartbeats, log shipping and audit writes of every running job fit at
once; GetActivityTask long polls in daemon threads of their own (kept for the next poll),
because a poll stays open 60 s and a pool thread would hold the interpreter at exit until it
returns. Here live the client-side rates per API (`agent.ratelimit`), the retries with
backoff, and the sorting of service errors: a closed task token becomes `errors.TaskGone`,
throttling is retried for as long as it lasts (a throttle never fails a job), other transient
failures until the call's deadline, anything else is raised to the caller.

The retry loop is our own rather than tenacity's AsyncRetrying: wrapping a call that succeeds
costs tenacity 38 us of CPU against 0.4 us here (measured on the development machine), about
0.2 ms a job, 3% of what the whole reference worker spends per job, for the same 15 lines.
"""

from __future__ import annotations

import asyncio
import functools
import math
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, TypeVar

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from agent import __version__, errors
from agent.logbatch import Events, put_log_events_body
from agent.outage import Outage
from agent.ratelimit import RateLimits, api_name
from agent.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_logs.type_defs import PutLogEventsResponseTypeDef
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_stepfunctions import SFNClient
    from mypy_boto3_stepfunctions.type_defs import GetActivityTaskOutputTypeDef

log = structlog.get_logger(__name__)
T = TypeVar("T")

# The longest pause between two attempts of one call.
MAX_BACKOFF_S: Final = 10.0
# `deadline_s` of a call that is retried until it gets through (or its caller is cancelled).
FOREVER: Final = math.inf

# The service closed this token: nothing more can be reported for the task.
TASK_GONE_CODES: Final = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
# The service asks the caller to slow down: retried for as long as it lasts.
THROTTLING_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "ProvisionedThroughputExceededException",
    }
)
TRANSIENT_CODES: Final = THROTTLING_CODES | frozenset(
    {
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


def is_throttling(exc: BaseException) -> bool:
    """The service refused the call for its rate (HTTP 429 or a throttling code)."""
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return error_code(exc) in THROTTLING_CODES or status == 429


def _sorted_errors(fn: Callable[..., T], kwargs: dict[str, Any], outage: Outage) -> T:
    """Run one call in a worker thread, turning a closed-token answer into TaskGone and
    telling `outage` whether the service could be reached."""
    try:
        result = fn(**kwargs)
    except ClientError as exc:
        _record(outage, getattr(fn, "__name__", "call"), exc)
        if error_code(exc) in TASK_GONE_CODES:
            raise errors.TaskGone(error_code(exc)) from None
        raise
    except BotoCoreError as exc:
        _record(outage, getattr(fn, "__name__", "call"), exc)
        raise
    outage.succeeded()
    return result


def _record(outage: Outage, call: str, exc: BaseException) -> None:
    if is_transient(exc):
        outage.failed(call, error_code(exc))
    else:  # the service answered: it is reachable, the request was wrong
        outage.succeeded()


# The body of the PutLogEvents call this thread is making, set by LogBatches.
_prebuilt = threading.local()


def _use_prebuilt_body(params: dict[str, Any], **_: Any) -> None:
    body = getattr(_prebuilt, "body", None)
    if body is not None:
        params["body"] = body


class LogBatches:
    """PutLogEvents with a body built by `put_log_events_body`.

    botocore serializes a batch event by event in Python (about 5 us each, most of the
    agent's CPU for a chatty script); json.dumps does the same in C. The call goes through
    the client as any other (signing, endpoint, retries, hooks) with an empty `logEvents`,
    and the prepared body replaces the serialized one just before it is signed."""

    def __init__(self, logs: CloudWatchLogsClient) -> None:
        self._logs = logs
        logs.meta.events.register("before-call.cloudwatch-logs.PutLogEvents", _use_prebuilt_body)

    def put_log_events(
        self, *, logGroupName: str, logStreamName: str, events: Events
    ) -> PutLogEventsResponseTypeDef:
        """PutLogEvents of `events`; the body is built here, in the calling (worker) thread,
        so the event loop stays free to read the scripts' output meanwhile."""
        _prebuilt.body = put_log_events_body(logGroupName, logStreamName, events)
        try:
            return self._logs.put_log_events(logGroupName="", logStreamName="", logEvents=[])
        finally:
            _prebuilt.body = None


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
            # Every parameter of a hot-path call is built by the agent from validated input,
            # and the service checks them again; botocore's walk over them costs up to a tenth
            # of a call (a PutLogEvents batch of 10,000 events most).
            parameter_validation=False,
            # The agent's calls are its own in CloudTrail (and in the emulator's fault injector).
            user_agent_extra=f"rsql-agent/{__version__}",
        )
        poll = base.merge(
            Config(
                read_timeout=settings.poll_read_timeout_s,
                max_pool_connections=settings.effective_max_pollers + 2,
            )
        )
        session = boto3.session.Session()
        self.sfn: SFNClient = session.client("stepfunctions", config=base)
        self._sfn_poll: SFNClient = session.client("stepfunctions", config=poll)
        self.logs: CloudWatchLogsClient = session.client("logs", config=base)
        self.log_batches = LogBatches(self.logs)
        self.dynamodb: DynamoDBClient = session.client("dynamodb", config=base)
        # Read once at start: validation costs nothing that matters there.
        self.secretsmanager: SecretsManagerClient = session.client(
            "secretsmanager", config=base.merge(Config(parameter_validation=True))
        )
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aws")
        self._poll_threads = _DaemonThreads("poll")
        self._rates = RateLimits(settings.aws_max_calls_per_s, settings.aws_rates_per_s)
        # Calls sent to each API (attempts, polls included): for the logs and the tests.
        self.calls: Counter[str] = Counter()
        self.outage = Outage(settings.outage_warning_interval_s)
        self._session = session
        # Rare calls: botocore's parameter validation costs nothing that matters there.
        self._rare_config = base.merge(Config(parameter_validation=True))

    # Built on first use: only a host that is scaled in or looks up its tags needs them.
    @functools.cached_property
    def autoscaling(self) -> AutoScalingClient:
        return self._session.client("autoscaling", config=self._rare_config)

    @functools.cached_property
    def ec2(self) -> EC2Client:
        return self._session.client("ec2", config=self._rare_config)

    async def call(
        self, fn: Callable[..., T], /, *, deadline_s: float | None = None, **kwargs: Any
    ) -> T:
        """Call `fn(**kwargs)` (a client method) in a worker thread, within the API's client-side
        rate. Transient failures are retried with jittered exponential backoff until
        `deadline_s` (default: the aws_call_deadline_s setting; 0 = one attempt, whatever
        the error; FOREVER = until it succeeds or the caller is cancelled), throttling for as
        long as it lasts. Raises errors.TaskGone for a closed task token, else the last
        error."""
        api = api_name(getattr(fn, "__name__", "call"))
        deadline = self._settings.aws_call_deadline_s if deadline_s is None else deadline_s
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                return await self._attempt(api, fn, kwargs)
            except (ClientError, BotoCoreError) as exc:
                out_of_time = time.monotonic() - started >= deadline and not is_throttling(exc)
                if deadline <= 0 or out_of_time or not is_transient(exc):
                    raise
                # Debug only: `Outage` says, once a minute, that calls are failing.
                log.debug("aws_call_retry", call=api, attempt=attempt, error=error_code(exc))
            # Full jitter, so the hosts of a fleet that were throttled together do not
            # come back together.
            await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF_S, 0.2 * 2**attempt)))
            attempt += 1

    async def _attempt(self, api: str, fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
        await self._rates.take(api)
        self.calls[api] += 1
        call = functools.partial(_sorted_errors, fn, kwargs, self.outage)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

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
                self.outage.succeeded()
            except (BotoCoreError, ClientError) as error:
                _record(self.outage, "get_activity_task", error)
                exc = error
            if abandoned.is_set():
                self._fail_back(result)
                return
            try:
                loop.call_soon_threadsafe(deliver, result, exc)
            except RuntimeError:  # the loop is closed: nobody will ever take this task
                self._fail_back(result)

        self.calls["GetActivityTask"] += 1
        self._poll_threads.submit(poll)
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


class _DaemonThreads:
    """Daemon threads kept for the next long poll: starting a thread per poll costs a thread
    start per job, and the threads of concurrent.futures are joined at exit, which an open
    poll would hold up for a minute. At most as many threads as polls ever open at once."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        self._work.put(fn)
        if start:
            threading.Thread(target=self._serve, name=self._name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._work.get()()
            with self._lock:
                self._idle += 1
