"""Per-host metrics, published as CloudWatch embedded metric format (EMF): one PutLogEvents call
per interval (a minute by default) per host, no cloudwatch:PutMetricData.

`JobMetrics` counts in the event loop as things happen (a few additions per job); every
`metrics_interval_s`, on the wall clock's interval boundaries so every host's datapoint lands in
the same CloudWatch period, `MetricsPublisher` turns the interval into EMF JSON lines and writes
them to the stream `<instance id>` of `metrics_log_group`. CloudWatch extracts the metrics into
`metrics_namespace` under two dimension sets: [Activity] (the fleet: every host polling that
activity) and [Activity, InstanceId] (this host). docs/metrics.md is the contract: names, units,
what each means, and which drives the fleet's scaling.

Publishing never fails a job or the agent: a failed call is a warning and the interval's
numbers are dropped (counts would otherwise arrive in the wrong period).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent import __version__, schema
from agent.aws import Aws, error_code
from agent.settings import Settings

log = structlog.get_logger(__name__)

# Dimension names and values (docs/metrics.md).
ACTIVITY_DIMENSION: Final = "Activity"
INSTANCE_DIMENSION: Final = "InstanceId"
DIMENSION_SETS: Final = [[ACTIVITY_DIMENSION], [ACTIVITY_DIMENSION, INSTANCE_DIMENSION]]
# Metric name -> unit. Counts are per interval; the two Milliseconds metrics carry one value
# per job, so CloudWatch's percentiles and SampleCount work on them.
COUNT: Final = "Count"
UNITS: Final = {
    "SlotsBusy": COUNT,
    "Slots": COUNT,
    "Utilization": "Percent",
    "Polling": COUNT,
    "JobsStarted": COUNT,
    "JobsCompleted": COUNT,
    "JobsFailed": COUNT,
    "JobsTimedOut": COUNT,
    "JobsCancelled": COUNT,
    "JobsSkipped": COUNT,
    "JobDuration": "Milliseconds",
    "TaskWaitTime": "Milliseconds",
}
ENDED: Final = {
    schema.COMPLETED: "JobsCompleted",
    schema.FAILED: "JobsFailed",
    schema.TIMED_OUT: "JobsTimedOut",
    schema.CANCELLED: "JobsCancelled",
    schema.SKIPPED: "JobsSkipped",
}
# EMF: at most 100 values in one metric's array.
MAX_VALUES: Final = 100
# Fields of the activity task input the state machine adds for the wait metric.
SCHEDULED_AT_FIELD: Final = "scheduled_at"
RETRY_COUNT_FIELD: Final = "retry_count"


@dataclass
class Interval:
    """What happened on the host during one interval."""

    start_s: float  # epoch seconds
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDED.values(), 0))
    started: int = 0
    durations_ms: list[int] = field(default_factory=list)
    waits_ms: list[int] = field(default_factory=list)
    busy_slot_s: float = 0.0  # the integral of busy slots over the interval


class JobMetrics:
    """The counters; every method is called in the event loop and costs next to nothing."""

    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.polling = True
        self._busy = 0
        self._clock = clock
        self._since = clock()
        self._current = Interval(start_s=time.time())

    def set_busy(self, busy: int) -> None:
        """Slots in use changed (a job started or ended)."""
        self._integrate()
        self._busy = busy

    def task_received(self, raw_input: str) -> None:
        """A poll returned a task: count it, and how long it waited since it was scheduled
        (first attempts only: a retry's scheduled time is its first attempt's)."""
        self._current.started += 1
        wait_ms = _wait_ms(raw_input, time.time())
        if wait_ms is not None:
            self._current.waits_ms.append(wait_ms)

    def job_ended(self, status: str, duration_ms: int, ran: bool) -> None:
        """A job ended with `status`; `ran` when its script ran (its duration counts)."""
        name = ENDED.get(status)
        if name is not None:
            self._current.counts[name] += 1
        if ran:
            self._current.durations_ms.append(duration_ms)

    def take(self) -> tuple[Interval, float]:
        """The interval so far and its length in seconds; a new one starts."""
        self._integrate()
        done, self._current = self._current, Interval(start_s=time.time())
        return done, max(self._current.start_s - done.start_s, 1e-3)

    def _integrate(self) -> None:
        now = self._clock()
        self._current.busy_slot_s += self._busy * (now - self._since)
        self._since = now


def _wait_ms(raw_input: str, now_s: float) -> int | None:
    try:
        task = json.loads(raw_input)
        scheduled = task.get(SCHEDULED_AT_FIELD) if isinstance(task, dict) else None
        if not isinstance(scheduled, str) or task.get(RETRY_COUNT_FIELD, 0) != 0:
            return None
        moment = dt.datetime.fromisoformat(scheduled)
    except ValueError:
        return None  # not the agent's business here: the job reports bad input itself
    if moment.tzinfo is None:
        return None
    return max(0, int((now_s - moment.timestamp()) * 1000))


def emf_lines(
    interval: Interval, length_s: float, metrics: JobMetrics, namespace: str, dims: dict[str, str]
) -> list[str]:
    """The interval as EMF JSON lines: one with every metric, then more only when a job
    metric has over 100 values."""
    busy = interval.busy_slot_s / length_s
    values: dict[str, Any] = {
        "SlotsBusy": round(busy, 3),
        "Slots": metrics.slots,
        "Utilization": round(100.0 * busy / metrics.slots, 2),
        "Polling": int(metrics.polling),
        "JobsStarted": interval.started,
        **interval.counts,
    }
    lines = []
    for extra in _chunks(interval.durations_ms, interval.waits_ms):
        lines.append(_line(interval.start_s, namespace, dims, {**values, **extra}))
        values = {}
    return lines


def _chunks(durations: list[int], waits: list[int]) -> Iterator[dict[str, list[int]]]:
    index = 0
    while True:
        chunk = {
            name: part
            for name, series in (("JobDuration", durations), ("TaskWaitTime", waits))
            if (part := series[index : index + MAX_VALUES])
        }
        if index and not chunk:
            return
        yield chunk
        index += MAX_VALUES


def _line(start_s: float, namespace: str, dims: dict[str, str], values: dict[str, Any]) -> str:
    directive = {
        "Namespace": namespace,
        "Dimensions": DIMENSION_SETS,
        "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values],
    }
    document = {
        "_aws": {"Timestamp": int(start_s * 1000), "CloudWatchMetrics": [directive]},
        **dims,
        "AgentVersion": __version__,
        **values,
    }
    return json.dumps(document, separators=(",", ":"))


class MetricsPublisher:
    """Writes each interval's lines to the host's stream; `run()` until cancelled, then
    `flush()` the last, partial interval."""

    def __init__(self, settings: Settings, aws: Aws, metrics: JobMetrics, instance_id: str):
        self._settings = settings
        self._aws = aws
        self._metrics = metrics
        self._stream = instance_id
        activity = settings.activity_arn.split(":activity:", 1)[-1]
        self._dims = {ACTIVITY_DIMENSION: activity, INSTANCE_DIMENSION: instance_id}
        self._stream_ready = False
        self._warned = False

    async def run(self) -> None:
        interval_s = self._settings.metrics_interval_s
        while True:
            # Wake on the wall clock's boundary, never before it: each interval then maps
            # onto one CloudWatch period.
            boundary = (time.time() // interval_s + 1) * interval_s
            while (left_s := boundary - time.time()) > 0:  # noqa: ASYNC110 - a clock, no event
                await asyncio.sleep(left_s)
            await self.flush()

    async def flush(self) -> None:
        """Publish what the interval holds so far."""
        interval, length_s = self._metrics.take()
        lines = emf_lines(
            interval, length_s, self._metrics, self._settings.metrics_namespace, self._dims
        )
        try:
            await self._put(interval.start_s, lines)
        except (ClientError, BotoCoreError) as exc:
            if not self._warned:  # once: the group may simply not be deployed
                self._warned = True
                log.warning(
                    "metrics_not_published",
                    log_group=self._settings.metrics_log_group,
                    error=error_code(exc),
                    detail=str(exc),
                )

    async def _put(self, start_s: float, lines: list[str]) -> None:
        group = self._settings.metrics_log_group
        deadline_s = min(10.0, self._settings.metrics_interval_s / 2)
        if not self._stream_ready:
            try:
                await self._aws.call(
                    self._aws.logs.create_log_stream,
                    deadline_s=deadline_s,
                    logGroupName=group,
                    logStreamName=self._stream,
                )
            except ClientError as exc:
                if error_code(exc) != "ResourceAlreadyExistsException":
                    raise
            self._stream_ready = True
        events = [{"timestamp": int(start_s * 1000), "message": line} for line in lines]
        await self._aws.call(
            self._aws.logs.put_log_events,
            deadline_s=deadline_s,
            logGroupName=group,
            logStreamName=self._stream,
            logEvents=events,
        )
        self._warned = False
