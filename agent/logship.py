"""Shipping a job's output to CloudWatch Logs while it runs.

The shipper tails the job's local log file (written by runner.OutputLog at disk speed), woken
when new lines arrive and paced by `log_flush_interval_s`, so a short job costs one
PutLogEvents call and a chatty one about one a second. Batches keep to the PutLogEvents
limits, which the emulator does not enforce, so `check_batch` asserts them on every call.
CloudWatch trouble is logged and never fails a job: the local file keeps the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent.aio import cancel_and_wait
from agent.aws import Aws, error_code, is_transient
from agent.runner import TIMESTAMP_CHARS, OutputLog

log = structlog.get_logger(__name__)

# PutLogEvents limits (CloudWatch Logs API reference).
EVENT_OVERHEAD_BYTES: Final = 26
MAX_BATCH_EVENTS: Final = 10_000
MAX_BATCH_BYTES: Final = 1_048_576
MAX_EVENT_BYTES: Final = 256 * 1024
MAX_MESSAGE_BYTES: Final = MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES
MAX_BATCH_SPAN_MS: Final = 24 * 3600 * 1000
# The file is read in windows: memory stays flat however far behind the shipper is.
READ_WINDOW_BYTES: Final = 2 * 1024 * 1024
IDLE_CHECK_S: Final = 5.0


class BatchLimitError(Exception):
    """A batch breaks a PutLogEvents limit (a bug in the batching, never a user error)."""


@dataclass(frozen=True, slots=True)
class LogEvent:
    timestamp_ms: int
    message: str
    size: int  # bytes counted against the batch limit: UTF-8 message + 26


def make_event(timestamp_ms: int, message: str) -> LogEvent:
    return LogEvent(timestamp_ms, message, len(message.encode()) + EVENT_OVERHEAD_BYTES)


def split_message(raw: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> list[str]:
    """Decode a line and cut it into messages of at most `max_bytes` UTF-8 bytes, never in
    the middle of a character. An empty line becomes one space (CloudWatch wants 1+ chars)."""
    text = raw.decode(errors="replace").encode()
    if not text:
        return [" "]
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + max_bytes, len(text))
        # Step back over UTF-8 continuation bytes (10xxxxxx) to a character boundary.
        while end < len(text) and end > start and (text[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(text[start:end].decode())
        start = end
    return pieces


def batches(events: Iterable[LogEvent]) -> Iterator[list[LogEvent]]:
    """Pack chronological events into batches within every PutLogEvents limit."""
    batch: list[LogEvent] = []
    size = 0
    for event in events:
        if batch and (
            len(batch) >= MAX_BATCH_EVENTS
            or size + event.size > MAX_BATCH_BYTES
            or event.timestamp_ms - batch[0].timestamp_ms > MAX_BATCH_SPAN_MS
        ):
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += event.size
    if batch:
        yield batch


def check_batch(batch: list[LogEvent]) -> None:
    """Raise BatchLimitError unless `batch` is a valid PutLogEvents batch."""
    if not 1 <= len(batch) <= MAX_BATCH_EVENTS:
        raise BatchLimitError(f"{len(batch)} events in one batch")
    total = 0
    for before, event in zip([batch[0], *batch], batch, strict=False):
        real_size = len(event.message.encode()) + EVENT_OVERHEAD_BYTES
        if real_size != event.size or real_size > MAX_EVENT_BYTES or not event.message:
            raise BatchLimitError(f"event of {real_size} bytes (counted {event.size})")
        if event.timestamp_ms < before.timestamp_ms:
            raise BatchLimitError("events out of chronological order")
        total += real_size
    if total > MAX_BATCH_BYTES:
        raise BatchLimitError(f"batch of {total} bytes")
    if batch[-1].timestamp_ms - batch[0].timestamp_ms > MAX_BATCH_SPAN_MS:
        raise BatchLimitError("batch spans more than 24 hours")


class FileTail:
    """Reads complete lines of a local log file from where it last stopped, as events."""

    def __init__(self, output: OutputLog) -> None:
        self._file = output.path.open("rb")
        self._last_prefix = b""
        self._prefix_ms = 0
        self._last_ms = 0

    def read_events(self) -> list[LogEvent]:
        """Events of the complete lines written since the last call, at most one window."""
        start = self._file.tell()
        window = self._file.read(READ_WINDOW_BYTES)
        cut = window.rfind(b"\n") + 1
        self._file.seek(start + cut)
        if not cut:
            return []
        events: list[LogEvent] = []
        # split, not splitlines: a bare \r (a progress bar) is part of a line, not an end.
        for line in window[: cut - 1].split(b"\n"):
            timestamp_ms = max(self._timestamp_ms(line[:TIMESTAMP_CHARS]), self._last_ms)
            # Chronological even if the wall clock steps back: CloudWatch rejects disorder.
            self._last_ms = timestamp_ms
            text = line[TIMESTAMP_CHARS + 5 :]  # after "<timestamp> out "
            events.extend(make_event(timestamp_ms, m) for m in split_message(text))
        return events

    def _timestamp_ms(self, prefix: bytes) -> int:
        if prefix != self._last_prefix:  # lines of one read share a timestamp: parse once
            self._last_prefix = prefix
            try:
                moment = dt.datetime.fromisoformat(prefix.decode())
                self._prefix_ms = int(moment.timestamp() * 1000)
            except (ValueError, UnicodeDecodeError):
                pass  # not written by OutputLog: keep the previous time
        return self._prefix_ms

    def close(self) -> None:
        self._file.close()


class LogShipper:
    """Ships one job's local log file to its CloudWatch log stream until `close()`."""

    def __init__(
        self, aws: Aws, log_group: str, log_stream: str, output: OutputLog, interval_s: float
    ) -> None:
        self._aws = aws
        self._group = log_group
        self._stream = log_stream
        self._output = output
        self._interval_s = interval_s
        self._closing = asyncio.Event()
        self._tail = FileTail(output)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"logship {self._stream}")

    async def close(self, timeout_s: float) -> None:
        """Ship everything still in the file, then stop; gives up after `timeout_s`."""
        self._closing.set()
        self._output.wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout_s)
            except TimeoutError:
                log.warning("log_flush_timed_out", log_stream=self._stream)
                await cancel_and_wait(self._task)
        self._tail.close()

    def abort(self) -> None:
        """Stop at once, without the final flush."""
        if self._task is not None:
            self._task.cancel()
        self._tail.close()

    async def _run(self) -> None:
        try:
            if not await self._create_stream():
                return
            while not self._closing.is_set():
                # Woken by new output; the timer is a backstop for writes it did not see.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._output.wake.wait(), timeout=IDLE_CHECK_S)
                # Collect for one interval: fewer, fuller batches (a short job ships once).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=self._interval_s)
                self._output.wake.clear()
                await self._ship_available()
            await self._ship_available()
        except Exception:
            log.exception("log_shipping_failed", log_stream=self._stream)

    async def _create_stream(self) -> bool:
        for attempt in range(2):
            try:
                await self._aws.call(
                    self._aws.logs.create_log_stream,
                    logGroupName=self._group,
                    logStreamName=self._stream,
                )
                return True
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if code == "ResourceAlreadyExistsException":
                    return True
                if code == "ResourceNotFoundException" and attempt == 0:
                    await self._create_group()
                    continue
                log.warning("log_stream_unavailable", log_stream=self._stream, error=code)
                return False
        return False

    async def _create_group(self) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            await self._aws.call(self._aws.logs.create_log_group, logGroupName=self._group)

    async def _ship_available(self) -> None:
        """Ship every complete line in the file, window by window."""
        while events := self._tail.read_events():
            for batch in batches(events):
                await self._put(batch)

    async def _put(self, batch: list[LogEvent]) -> None:
        check_batch(batch)
        try:
            response = await self._aws.call(
                self._aws.logs.put_log_events,
                logGroupName=self._group,
                logStreamName=self._stream,
                logEvents=[{"timestamp": e.timestamp_ms, "message": e.message} for e in batch],
            )
        except (ClientError, BotoCoreError) as exc:
            # After the retries of the AWS layer: lose this batch, keep the job and the file.
            log.warning(
                "log_batch_dropped",
                log_stream=self._stream,
                events=len(batch),
                error=error_code(exc),
                transient=is_transient(exc),
            )
            return
        if response.get("rejectedLogEventsInfo"):
            log.warning("log_events_rejected", log_stream=self._stream)
