"""Shipping a job's output to CloudWatch Logs: while it runs, and after it ended for as long as
it takes.

A shipper tails the job's local log file (written by runner.OutputLog at disk speed), woken
when new lines arrive and paced by `log_flush_interval_s`, so a short job costs one
PutLogEvents call and a chatty one about one a second. When the file cannot be written, the
lines after what it holds come from OutputLog's memory spool instead.

Nothing has a deadline: a batch that fails for a transient reason (the endpoint unreachable,
throttling, a 5xx) is retried with backoff until it goes through, however long that takes.
The job's completion waits at most `log_flush_wait_s` for its last lines; the shipper goes on
in the background after that. Each accepted batch moves the stream's position in the journal,
so after a restart the next agent ships the rest of the file from there. Memory stays flat:
a shipper holds one batch at a time, and at most `concurrency + 2` shippers hold one at once.
A batch the service rejects for good (not transient) is dropped with an error: retrying it
cannot help.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent.aws import FOREVER, Aws, error_code
from agent.journal import Journal, Shipping
from agent.logbatch import Clock, Events, LogEvent, Packed, check_batch, make_event, pack
from agent.output import OutputLog

log = structlog.get_logger(__name__)

# Local file windows: a line is at most 1 MiB, so a window always holds a whole one.
READ_WINDOW_BYTES: Final = 2 * 1024 * 1024
IDLE_CHECK_S: Final = 5.0
LOST_LINES_NOTE: Final = (
    "[rsql-agent] {} lines of output are missing here: the local log could not be written "
    "and CloudWatch could not be reached for long enough to hold them in memory"
)


class Position(NamedTuple):
    """Where the next batch starts: a file offset and the pieces of that line already
    shipped, and the number of the next spooled line."""

    offset: int
    piece: int
    seq: int


class LineSource:
    """Complete lines of one job's output from a position on: the local file (up to what
    OutputLog wrote whole, or to its end once the job is over), then the memory spool."""

    def __init__(self, record: Shipping, output: OutputLog | None) -> None:
        self._record = record
        self._output = output
        self._seq = 0  # the next spooled line to ship
        self._clock = Clock()
        self._file: BinaryIO | None = None
        self._gone = False

    def read(self) -> tuple[Packed, Position]:
        """The next batch (empty when there is nothing new), and where the one after starts."""
        record, output = self._record, self._output
        if output is not None and output.problem is not None and record.limit is None:
            record.limit = output.file_end  # a restart must not read the cut write after it
        lines, window_bytes = self._file_lines(record.offset)
        if lines:
            packed = pack(lines, record.piece, self._clock)
            used = packed.lines
            # After the last whole line used (a piece of a line longer than the window ends
            # with the window, not after a newline).
            offset = record.offset + min(sum(map(len, lines[:used])) + used, window_bytes)
            return packed, Position(offset, packed.piece, self._seq)
        if output is None or output.problem is None:
            return Packed(Events([], [], []), 0, 0), Position(
                record.offset, record.piece, self._seq
            )
        spooled, lost = output.spooled(self._seq)
        packed = pack(spooled, 0 if lost else record.piece, self._clock)
        after = Position(record.offset, packed.piece, self._seq + lost + packed.lines)
        if lost:
            # Lines dropped from the spool before they were shipped: say so where they were.
            note = Events.of([self._lost_note(lost, spooled)])
            return Packed(note + packed.events, packed.lines, packed.piece), after
        return packed, after

    def advance(self, after: Position) -> None:
        """The batch read last is in CloudWatch."""
        self._record.offset, self._record.piece, self._seq = after
        if self._output is not None:
            self._output.release(self._seq)

    def exhausted(self) -> bool:
        """Everything is shipped and no more will come."""
        output = self._output
        if output is None:
            return True  # a previous run's file: read() got to its end
        return output.ended and (output.problem is None or self._seq >= self._spool_end())

    def _spool_end(self) -> int:
        assert self._output is not None
        return self._output.spool_start + len(self._output.spool)

    def _file_lines(self, offset: int) -> tuple[list[bytes], int]:
        """Whole lines from `offset` on (one window at most), and the window's length."""
        limit = self._limit()
        size = READ_WINDOW_BYTES if limit is None else min(READ_WINDOW_BYTES, limit - offset)
        if size <= 0 or self._open() is None:
            return [], 0
        assert self._file is not None
        self._file.seek(offset)
        window = self._file.read(size)
        # split, not splitlines: a bare \r (a progress bar) is part of a line, not an end.
        lines = window.split(b"\n")
        rest = lines.pop()  # after the last newline: empty, or a line not finished yet
        finished_file = self._output is None and len(window) < size
        if rest and (finished_file or not lines):
            # A finished file's last line counts without a newline; a line longer than a
            # window (not OutputLog's) goes in window-sized parts.
            lines.append(rest)
        return lines, len(window)

    def _open(self) -> BinaryIO | None:
        # Kept open from the first read on: if the file is deleted meanwhile (a clean-up of
        # the log directory), what the job writes to it can still be read and shipped.
        if self._file is None and not self._gone:
            try:
                self._file = open(self._record.path, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                self._gone = True
                log.warning("local_log_unreadable", path=self._record.path, error=str(exc))
                if self._output is None or self._output.problem is None:
                    self._record.offset = self._limit() or self._record.offset
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _limit(self) -> int | None:
        if self._output is not None:
            return self._output.file_end
        return self._record.limit

    def _lost_note(self, lost: int, spooled: list[bytes]) -> LogEvent:
        timestamp_ms = self._clock.timestamp_ms(spooled[0]) if spooled else 0
        return make_event(timestamp_ms, LOST_LINES_NOTE.format(lost))


class LogShipper:
    """Ships one job's output to its log stream until everything is there."""

    def __init__(
        self,
        shipping: LogShipping,
        token: str,
        record: Shipping,
        output: OutputLog | None,
    ) -> None:
        self._shipping = shipping
        self._aws = shipping.aws
        self._token = token
        self._record = record
        self._output = output
        self._source = LineSource(record, output)
        self.caught_up = asyncio.Event()
        self._stream_ready = False

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every line to be shipped; True if they were. Shipping
        goes on either way."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.caught_up.wait(), timeout=timeout_s)
        if not self.caught_up.is_set():
            log.info("log_shipping_continues", log_stream=self._record.log_stream)
        return self.caught_up.is_set()

    async def run(self) -> None:
        """Ship until the output ended and every line is in CloudWatch."""
        try:
            await self._ship()
            self.caught_up.set()
            self._record.done = True
            self._shipping.journal.update(self._token)
        finally:
            self._source.close()

    async def _ship(self) -> None:
        while True:
            async with self._shipping.slots:
                if self._output is not None:
                    self._output.wake.clear()
                packed, after = self._source.read()
                if packed.events:
                    # The stream is created with the first line: a job that prints nothing
                    # costs no CreateLogStream and has no stream.
                    if not self._stream_ready and not await self._create_stream():
                        return
                    self._stream_ready = True
                    await self._put(packed.events)
                    self._source.advance(after)
                    self._shipping.journal.update(self._token)
                    continue
            if self._source.exhausted():
                return
            await self._wait_for_output()

    async def _wait_for_output(self) -> None:
        output = self._output
        assert output is not None
        # Woken by new output; the timer is a backstop for writes it did not see.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(output.wake.wait(), timeout=IDLE_CHECK_S)
        # Collect for one interval (fewer, fuller batches: a short job ships once), unless
        # the output ends first.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(output.closed.wait(), timeout=self._shipping.interval_s)

    async def _create_stream(self) -> bool:
        group, stream = self._record.log_group, self._record.log_stream
        for _ in range(2):
            try:
                await self._aws.call(
                    self._aws.logs.create_log_stream,
                    deadline_s=FOREVER,
                    logGroupName=group,
                    logStreamName=stream,
                )
                return True
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if code == "ResourceAlreadyExistsException":
                    return True
                if code != "ResourceNotFoundException":
                    log.error("log_stream_unavailable", log_stream=stream, error=code)
                    return False
            with contextlib.suppress(ClientError, BotoCoreError):
                await self._aws.call(
                    self._aws.logs.create_log_group, deadline_s=FOREVER, logGroupName=group
                )
        return False

    async def _put(self, events: Events) -> None:
        check_batch(events)
        for _ in range(2):
            try:
                response = await self._aws.call(
                    self._aws.log_batches.put_log_events,
                    deadline_s=FOREVER,
                    logGroupName=self._record.log_group,
                    logStreamName=self._record.log_stream,
                    events=events,
                )
            except (ClientError, BotoCoreError) as exc:
                # Only a final answer gets here (transient failures are retried for ever).
                if error_code(exc) == "ResourceNotFoundException" and await self._create_stream():
                    continue  # the stream or group was deleted meanwhile
                log.error(
                    "log_batch_dropped",
                    log_stream=self._record.log_stream,
                    events=len(events),
                    error=error_code(exc),
                )
                return
            if response.get("rejectedLogEventsInfo"):
                log.warning("log_events_rejected", log_stream=self._record.log_stream)
            return


class LogShipping:
    """Every shipper of the agent: of running jobs, of ended jobs still behind, and of a
    previous run's jobs. Their tasks are awaited (or cancelled) by the agent's drain."""

    def __init__(self, aws: Aws, journal: Journal, interval_s: float, concurrency: int) -> None:
        self.aws = aws
        self.journal = journal
        self.interval_s = interval_s
        # Each shipper holding a batch holds up to 1 MiB of events: bound how many do.
        self.slots = asyncio.Semaphore(concurrency + 2)
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, token: str, record: Shipping, output: OutputLog | None) -> LogShipper:
        """Ship `record`'s stream (from its position on) in a task of its own."""
        shipper = LogShipper(self, token, record, output)
        task = asyncio.create_task(shipper.run(), name=f"logship {record.log_stream}")
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return shipper

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("log_shipping_failed", error=repr(task.exception()))


def shipping_record(log_group: str, log_stream: str, path: Path) -> Shipping:
    """A new stream's position: nothing shipped yet."""
    return Shipping(log_group=log_group, log_stream=log_stream, path=str(path))
