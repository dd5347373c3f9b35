"""CloudWatch batching: every batch the shipper can build is within the PutLogEvents limits
(the emulator does not enforce them, so these tests do)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from agent.logship import (
    EVENT_OVERHEAD_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_BATCH_SPAN_MS,
    MAX_EVENT_BYTES,
    BatchLimitError,
    FileTail,
    LogEvent,
    batches,
    check_batch,
    make_event,
    split_message,
)
from agent.runner import OutputLog


def test_split_message_respects_the_event_limit_and_utf8() -> None:
    line = ("é€𝄞a" * 100_000).encode()  # 2-, 3-, 4- and 1-byte characters, 1 MB
    pieces = split_message(line)
    assert "".join(pieces) == line.decode()
    assert all(len(p.encode()) + EVENT_OVERHEAD_BYTES <= MAX_EVENT_BYTES for p in pieces)
    assert len(pieces) == 4
    assert split_message(b"") == [" "]
    assert split_message(b"\xff ok") == ["\ufffd ok"]


def _check_all(events: list[LogEvent]) -> list[list[LogEvent]]:
    out = list(batches(events))
    for batch in out:
        check_batch(batch)
    assert [e for b in out for e in b] == events  # nothing lost, order kept
    return out


def test_many_small_events_split_at_10000() -> None:
    out = _check_all([make_event(1000 + i // 100, f"line {i}") for i in range(25_001)])
    assert [len(b) for b in out] == [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS, 5_001]


def test_large_events_split_by_bytes() -> None:
    big = "x" * (MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES)
    out = _check_all([make_event(1, big) for _ in range(9)])
    assert [len(b) for b in out] == [4, 4, 1]
    assert sum(e.size for e in out[0]) <= MAX_BATCH_BYTES


def test_batches_never_span_more_than_a_day() -> None:
    out = _check_all([make_event(0, "a"), make_event(MAX_BATCH_SPAN_MS + 1, "b")])
    assert len(out) == 2


def test_random_mixes_stay_within_limits() -> None:
    rng = random.Random(7)
    events = []
    for i in range(3_000):
        size = rng.choice([1, 80, 4_000, 100_000, MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES])
        events.append(make_event(i, "y" * size))
    _check_all(events)


@pytest.mark.parametrize(
    "batch",
    [
        [],
        [make_event(1, "a")] * (MAX_BATCH_EVENTS + 1),
        [make_event(1, "x" * MAX_EVENT_BYTES)],
        [make_event(2, "a"), make_event(1, "b")],
        [make_event(1, "x" * 200_000) for _ in range(6)],
        [LogEvent(1, "é", 27)],  # size miscounted (é is 2 bytes)
        [make_event(0, "a"), make_event(MAX_BATCH_SPAN_MS + 1, "b")],
    ],
    ids=["empty", "too-many", "event-too-big", "disorder", "too-many-bytes", "miscount", "span"],
)
def test_check_batch_rejects_what_aws_would(batch: list[LogEvent]) -> None:
    with pytest.raises(BatchLimitError):
        check_batch(batch)


def test_file_tail_reads_complete_lines_in_order(tmp_path: Path) -> None:
    async def go() -> tuple[list[LogEvent], list[LogEvent], list[LogEvent]]:
        output = OutputLog(tmp_path / "o.log", max_line_bytes=512 * 1024, tail_lines=0)
        tail = FileTail(output)
        output.feed(b"out", b"one\r two\nthr")
        first = tail.read_events()
        output.feed(b"out", b"ee\n" + b"z" * 300_000 + b"\n")
        second = tail.read_events()
        third = tail.read_events()
        tail.close()
        output.close()
        return first, second, third

    first, second, third = asyncio.run(go())
    assert [e.message for e in first] == ["one\r two"]  # a bare CR is not a line end
    assert [len(e.message) for e in second] == [5, 262118, 300_000 - 262118]
    assert second[0].message == "three"
    assert first[0].timestamp_ms <= second[0].timestamp_ms
    assert third == []
