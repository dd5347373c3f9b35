"""A job's output: written line by line, with a timestamp, to its local log file at disk speed.

The CloudWatch shipper tails that file on its own time, so a slow CloudWatch never blocks the
script and memory stays flat whatever the script prints. The file never blocks the script
either: when it cannot be written, the lines go to a bounded memory spool the shipper drains.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Final

import structlog

from agent import schema

log = structlog.get_logger(__name__)

# A local log line is `<ISO-8601 UTC ms> <out|err> <text>`: fixed-width prefix, easy to parse.
TIMESTAMP_CHARS: Final = 24
STDOUT: Final = b"out"
STDERR: Final = b"err"
# Lines of the tail that go into a failure's cause are cut to this many characters.
TAIL_LINE_CHARS: Final = 1000
# The shipper takes spooled lines in reads of about this much (a batch holds at most 1 MiB).
SPOOL_READ_BYTES: Final = 1024 * 1024


class OutputLog:
    """The job's output: lines into the local file, the last few kept for the failure cause,
    and `wake` set whenever new lines are there for the shipper.

    Writing never blocks or fails the job: if the file cannot be created or written (disk
    full, directory gone, no permission), `problem` says why, a warning is logged at once,
    the file keeps what it had (`file_end` bytes of complete lines) and later lines go to a
    memory spool the shipper drains instead, capped at `spool_max_bytes` (the oldest lines
    are dropped and counted beyond that, so memory stays flat even if CloudWatch is away too).
    """

    def __init__(
        self, path: Path, max_line_bytes: int, tail_lines: int, spool_max_bytes: int
    ) -> None:
        self.path = path
        self.wake = asyncio.Event()
        self.problem: str | None = None
        self.file_end = 0
        self.closed = asyncio.Event()
        # Lines are numbered from 0 as they enter the spool; `spool_start` is spool[0]'s number.
        self.spool: deque[bytes] = deque()
        self.spool_start = 0
        self.spool_bytes = 0
        self.dropped_lines = 0
        self._spool_max_bytes = spool_max_bytes
        self._max_line_bytes = max_line_bytes
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._partial: dict[bytes, bytearray] = {STDOUT: bytearray(), STDERR: bytearray()}
        self._fd: int | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            # Output can hold data: readable by the agent's group at most.
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            self.file_end = os.fstat(self._fd).st_size
        except OSError as exc:
            self._fail(exc)

    def feed(self, stream: bytes, chunk: bytes) -> None:
        """Add a chunk read from `stream`; complete lines are written at once."""
        buffer = self._partial[stream]
        first, end = chunk.find(b"\n"), chunk.rfind(b"\n")
        if (
            first != -1
            and self._fd is not None
            and b"\r" not in chunk
            and b"\r" not in buffer
            and self._within_cap(len(buffer) + first, chunk, first, end)
        ):
            # The common case, in bulk: no line to cut, no CR to strip, the file writable.
            data = bytes(buffer) + chunk[:end] if buffer else chunk[:end]
            buffer[:] = chunk[end + 1 :]
            self._write_block(stream, data)
            self._cap_partial(stream, buffer)
            return
        buffer += chunk
        lines: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            lines.extend(self._cap(bytes(buffer[start:end]).rstrip(b"\r")))
            start = end + 1
        del buffer[:start]
        self._write(stream, lines)
        self._cap_partial(stream, buffer)

    def _within_cap(self, first_bytes: int, chunk: bytes, first: int, end: int) -> bool:
        """Are the lines up to `end` (the first of them `first_bytes` long) within the cap?"""
        cap = self._max_line_bytes
        if first_bytes > cap:
            return False
        return end - first <= cap or max(map(len, chunk[first + 1 : end].split(b"\n"))) <= cap

    def _cap_partial(self, stream: bytes, buffer: bytearray) -> None:
        # A line with no newline yet is cut at the cap, so one endless line cannot grow memory.
        lines = []
        while len(buffer) >= self._max_line_bytes:
            lines.append(bytes(buffer[: self._max_line_bytes]))
            del buffer[: self._max_line_bytes]
        self._write(stream, lines)

    def end(self, stream: bytes) -> None:
        """The stream closed: its last line counts even without a newline."""
        buffer = self._partial[stream]
        if buffer:
            self._write(stream, [bytes(buffer)])
            buffer.clear()

    def tail(self) -> str:
        """The last lines of output, oldest first."""
        return "\n".join(self._tail)

    @property
    def ended(self) -> bool:
        return self.closed.is_set()

    def close(self) -> None:
        """No more output: the shipper may ship the last lines and stop."""
        self.closed.set()
        self.wake.set()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _cap(self, line: bytes) -> list[bytes]:
        size = self._max_line_bytes
        if len(line) <= size:
            return [line]
        return [line[i : i + size] for i in range(0, len(line), size)]

    def _write(self, stream: bytes, lines: list[bytes]) -> None:
        if not lines:
            return
        prefix = schema.iso_utc_ms(time.time()).encode() + b" " + stream + b" "
        records = [prefix + line for line in lines]
        if self._fd is not None:
            self._write_file(b"\n".join(records) + b"\n", lambda: records)
        else:
            self._spool(records)
        if self._tail.maxlen:
            for line in lines[-self._tail.maxlen :]:
                self._tail.append(line[:TAIL_LINE_CHARS].decode(errors="replace"))
        self.wake.set()

    def _write_block(self, stream: bytes, data: bytes) -> None:
        """`data`: whole lines without the last newline, none longer than the cap."""
        prefix = schema.iso_utc_ms(time.time()).encode() + b" " + stream + b" "
        block = prefix + data.replace(b"\n", b"\n" + prefix) + b"\n"
        self._write_file(block, lambda: block[:-1].split(b"\n"))
        if self._tail.maxlen:
            for line in data.rsplit(b"\n", self._tail.maxlen)[-self._tail.maxlen :]:
                self._tail.append(line[:TAIL_LINE_CHARS].decode(errors="replace"))
        self.wake.set()

    def _write_file(self, block: bytes, records: Callable[[], list[bytes]]) -> None:
        assert self._fd is not None
        view = memoryview(block)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # Part of the block may be in the file as a cut line after `file_end`; the shipper
            # reads the file only up to `file_end` and takes the whole block from the spool.
            os.close(self._fd)
            self._fd = None
            self._fail(exc)
            self._spool(records())
            return
        self.file_end += len(block)

    def spooled(self, seq: int) -> tuple[list[bytes], int]:
        """Spooled lines from number `seq` on (at most a batch's worth), and how many lines
        before them were dropped unshipped."""
        lost = max(0, self.spool_start - seq)
        skip = max(0, seq - self.spool_start)
        lines = []
        size = 0
        for line in itertools.islice(self.spool, skip, None):
            lines.append(line)
            size += len(line)
            if size >= SPOOL_READ_BYTES:
                break
        return lines, lost

    def release(self, seq: int) -> None:
        """Lines numbered below `seq` are shipped: free them."""
        while self.spool and self.spool_start < seq:
            self.spool_bytes -= len(self.spool.popleft())
            self.spool_start += 1

    def _spool(self, lines: list[bytes]) -> None:
        self.spool.extend(lines)
        self.spool_bytes += sum(len(line) for line in lines)
        while self.spool_bytes > self._spool_max_bytes and self.spool:
            self.spool_bytes -= len(self.spool.popleft())
            self.spool_start += 1
            self.dropped_lines += 1

    def _fail(self, exc: OSError) -> None:
        self.problem = f"{exc.strerror or exc} ({self.path})"
        log.warning(
            "local_log_unwritable",
            path=str(self.path),
            error=exc.strerror or str(exc),
            detail="the script runs on; its output goes on to CloudWatch",
        )


def tail_of_file(path: str, lines: int) -> str:
    """The text of the last `lines` lines of a local log file (OutputLog's format), for the
    cause of a job reported after a restart; "" if it cannot be read."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - 64 * 1024))
            data = file.read()
    except OSError:
        return ""
    texts = [line[TIMESTAMP_CHARS + 5 :] for line in data.split(b"\n") if line][-lines:]
    return "\n".join(t[:TAIL_LINE_CHARS].decode(errors="replace") for t in texts)
