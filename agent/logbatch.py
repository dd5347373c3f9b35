"""PutLogEvents batches: events within every CloudWatch Logs limit, in order.

The emulator does not enforce these limits, so `check_batch` asserts them on every call the
shipper makes. `pack` turns a job's log lines into one batch at a time and says where the next
batch starts, down to the piece of a line too long for one event, so a shipper can resume
exactly there after a failure or a restart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from agent.output import TIMESTAMP_CHARS

# The text of a local log line starts after "<timestamp> out ".
TEXT_START: Final = TIMESTAMP_CHARS + 5

# PutLogEvents limits (CloudWatch Logs API reference).
EVENT_OVERHEAD_BYTES: Final = 26
MAX_BATCH_EVENTS: Final = 10_000
MAX_BATCH_BYTES: Final = 1_048_576
MAX_EVENT_BYTES: Final = 256 * 1024
MAX_MESSAGE_BYTES: Final = MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES
MAX_BATCH_SPAN_MS: Final = 24 * 3600 * 1000


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


class Clock:
    """Event times from the timestamps of local log lines, never going backwards within a
    stream (CloudWatch rejects a batch out of order, and the wall clock may step back)."""

    def __init__(self) -> None:
        self._last_prefix = b""
        self._prefix_ms = 0
        self._last_ms = 0

    def timestamp_ms(self, line: bytes) -> int:
        prefix = line[:TIMESTAMP_CHARS]
        if prefix != self._last_prefix:  # lines of one read share a timestamp: parse once
            self._last_prefix = prefix
            try:
                moment = dt.datetime.fromisoformat(prefix.decode())
                self._prefix_ms = int(moment.timestamp() * 1000)
            except (ValueError, UnicodeDecodeError):
                pass  # not written by OutputLog: keep the previous time
        self._last_ms = max(self._last_ms, self._prefix_ms)
        return self._last_ms


@dataclass(frozen=True, slots=True)
class Packed:
    """One batch, and where the next starts: after `lines` whole lines, `piece` messages
    into the line that follows (0 when it starts clean)."""

    events: list[LogEvent]
    lines: int
    piece: int


def pack(lines: Iterable[bytes], first_piece: int, clock: Clock) -> Packed:
    """Pack local log lines (`<timestamp> out|err <text>`, without newline) into one batch,
    skipping the first `first_piece` messages of the first line (shipped before)."""
    events: list[LogEvent] = []
    size = 0
    consumed = 0
    for raw in lines:
        timestamp_ms = clock.timestamp_ms(raw)
        messages = split_message(raw[TEXT_START:])
        for index in range(first_piece, len(messages)):
            event = make_event(timestamp_ms, messages[index])
            if events and (
                len(events) >= MAX_BATCH_EVENTS
                or size + event.size > MAX_BATCH_BYTES
                or event.timestamp_ms - events[0].timestamp_ms > MAX_BATCH_SPAN_MS
            ):
                return Packed(events, consumed, index)
            events.append(event)
            size += event.size
        consumed += 1
        first_piece = 0
    return Packed(events, consumed, 0)
