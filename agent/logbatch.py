"""PutLogEvents batches: events within every CloudWatch Logs limit, in order.

The emulator does not enforce these limits, so `check_batch` asserts them on every call the
shipper makes. `pack` turns a job's log lines into one batch at a time and says where the next
batch starts, down to the piece of a line too long for one event, so a shipper can resume
exactly there after a failure or a restart.

A chatty script sends a million lines in seconds, so nothing here handles a line at a time in
Python where it can be helped: a batch is held in columns (`Events`, no object per line), and
the common window (valid UTF-8, no line longer than an event, one day) is cut, decoded and
measured in bulk; the rest takes the exact line-by-line path.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import operator
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
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


@dataclass(slots=True)
class Events:
    """Events in columns: their times, messages and sizes (UTF-8 message + 26 bytes)."""

    timestamps_ms: list[int]
    messages: list[str]
    sizes: list[int]

    @classmethod
    def of(cls, events: Sequence[LogEvent]) -> Events:
        return cls(
            [e.timestamp_ms for e in events], [e.message for e in events], [e.size for e in events]
        )

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[LogEvent]:
        return map(LogEvent, self.timestamps_ms, self.messages, self.sizes)

    def __getitem__(self, index: int) -> LogEvent:
        return LogEvent(self.timestamps_ms[index], self.messages[index], self.sizes[index])

    def __add__(self, other: Events) -> Events:
        return Events(
            self.timestamps_ms + other.timestamps_ms,
            self.messages + other.messages,
            self.sizes + other.sizes,
        )


def check_batch(batch: Events | Sequence[LogEvent]) -> None:
    """Raise BatchLimitError unless `batch` is a valid PutLogEvents batch."""
    events = batch if isinstance(batch, Events) else Events.of(batch)
    if not 1 <= len(events) <= MAX_BATCH_EVENTS:
        raise BatchLimitError(f"{len(events)} events in one batch")
    messages, sizes, times = events.messages, events.sizes, events.timestamps_ms
    if "".join(messages).isascii():
        lengths = list(map(len, messages))
    else:
        lengths = [len(m.encode()) for m in messages]
    real = [length + EVENT_OVERHEAD_BYTES for length in lengths]
    if real != sizes or max(real) > MAX_EVENT_BYTES or min(lengths) == 0:
        wrong = next(
            i for i, r in enumerate(real) if r != sizes[i] or r > MAX_EVENT_BYTES or r == 26
        )
        raise BatchLimitError(f"event of {real[wrong]} bytes (counted {sizes[wrong]})")
    if not all(map(operator.le, times, itertools.islice(times, 1, None))):
        raise BatchLimitError("events out of chronological order")
    if sum(real) > MAX_BATCH_BYTES:
        raise BatchLimitError(f"batch of {sum(real)} bytes")
    if times[-1] - times[0] > MAX_BATCH_SPAN_MS:
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

    events: Events
    lines: int
    piece: int


def pack(lines: Sequence[bytes], first_piece: int, clock: Clock) -> Packed:
    """Pack local log lines (`<timestamp> out|err <text>`, without newline) into one batch,
    skipping the first `first_piece` messages of the first line (shipped before)."""
    if first_piece == 0 and lines:
        packed = _pack_bulk(lines, clock)
        if packed is not None:
            return packed
    return _pack_each(lines, first_piece, clock)


def _pack_bulk(lines: Sequence[bytes], clock: Clock) -> Packed | None:
    """The batch from the first lines, when they are the common kind: valid UTF-8, each one
    event, within a day. None otherwise (the caller packs line by line)."""
    raw = [line[TEXT_START:] for line in itertools.islice(lines, MAX_BATCH_EVENTS)]
    # An empty line is shipped as " " (1 byte); a line over an event's limit needs cutting.
    sizes = [(n or 1) + EVENT_OVERHEAD_BYTES for n in map(len, raw)]
    if max(sizes) > MAX_EVENT_BYTES:
        return None
    count = bisect_right(list(itertools.accumulate(sizes)), MAX_BATCH_BYTES)
    del raw[count:], sizes[count:]
    try:
        messages = b"\n".join(raw).decode().split("\n")
    except UnicodeDecodeError:
        return None
    if min(sizes) == EVENT_OVERHEAD_BYTES + 1:
        messages = [m or " " for m in messages]
    times: list[int] = []
    trial = copy.copy(clock)  # left as it was if the line-by-line path takes over
    # Lines written together share their timestamp: one parse per run of them.
    for prefix, run in itertools.groupby(line[:TIMESTAMP_CHARS] for line in lines[:count]):
        times.extend(itertools.repeat(trial.timestamp_ms(prefix), len(list(run))))
    if times[-1] - times[0] > MAX_BATCH_SPAN_MS:
        return None
    clock.__dict__.update(trial.__dict__)
    return Packed(Events(times, messages, sizes), count, 0)


def _pack_each(lines: Sequence[bytes], first_piece: int, clock: Clock) -> Packed:
    events = Events([], [], [])
    size = 0
    consumed = 0
    for raw in lines:
        timestamp_ms = clock.timestamp_ms(raw)
        messages = split_message(raw[TEXT_START:])
        for index in range(first_piece, len(messages)):
            event = make_event(timestamp_ms, messages[index])
            if events.messages and (
                len(events) >= MAX_BATCH_EVENTS
                or size + event.size > MAX_BATCH_BYTES
                or event.timestamp_ms - events.timestamps_ms[0] > MAX_BATCH_SPAN_MS
            ):
                return Packed(events, consumed, index)
            events.timestamps_ms.append(event.timestamp_ms)
            events.messages.append(event.message)
            events.sizes.append(event.size)
            size += event.size
        consumed += 1
        first_piece = 0
    return Packed(events, consumed, 0)


def put_log_events_body(log_group: str, log_stream: str, events: Events) -> bytes:
    """A PutLogEvents request body: the JSON botocore's serializer writes (without its
    spaces; tests/test_agent_logship.py compares the two). Written without
    a dict per event: each message escaped by json's C encoder, the events of one timestamp
    joined at once."""
    encoded = list(map(encode_basestring_ascii, events.messages))
    runs = []
    start = 0
    for timestamp_ms, run in itertools.groupby(events.timestamps_ms):
        end = start + len(list(run))
        head = f'{{"timestamp":{timestamp_ms},"message":'
        runs.append(head + ("}," + head).join(encoded[start:end]) + "}")
        start = end
    params = json.dumps(
        {"logGroupName": log_group, "logStreamName": log_stream}, separators=(",", ":")
    )[:-1]
    return f'{params},"logEvents":[{",".join(runs)}]}}'.encode()
