"""CloudWatch batching: every batch the shipper can build is within the PutLogEvents limits
(the emulator does not enforce them, so these tests do), and the line source resumes exactly
where the last accepted batch ended, in the file and in the memory spool."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import pytest

from agent.journal import Shipping
from agent.logbatch import (
    EVENT_OVERHEAD_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_BATCH_SPAN_MS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    BatchLimitError,
    Clock,
    Events,
    LogEvent,
    check_batch,
    make_event,
    pack,
    put_log_events_body,
    split_message,
)
from agent.logship import LineSource
from agent.output import OutputLog
from agent.schema import iso_utc_ms


def test_split_message_respects_the_event_limit_and_utf8() -> None:
    line = ("é€𝄞a" * 100_000).encode()  # 2-, 3-, 4- and 1-byte characters, 1 MB
    pieces = split_message(line)
    assert "".join(pieces) == line.decode()
    assert all(len(p.encode()) + EVENT_OVERHEAD_BYTES <= MAX_EVENT_BYTES for p in pieces)
    assert len(pieces) == 4
    assert split_message(b"") == [" "]
    assert split_message(b"\xff ok") == ["\ufffd ok"]


def _line(ms: int, text: str) -> bytes:
    return iso_utc_ms(ms / 1000).encode() + b" out " + text.encode()


def _check_all(lines: list[bytes]) -> list[list[LogEvent]]:
    """Pack until every line is consumed, resuming as the shipper does; every batch is valid
    and together they hold every message of every line, in order."""
    out: list[list[LogEvent]] = []
    rest, clock, piece = lines, Clock(), 0
    while rest:
        packed = pack(rest, piece, clock)
        check_batch(packed.events)
        out.append(packed.events)
        rest, piece = rest[packed.lines :], packed.piece
    expected = [m for line in lines for m in split_message(line[29:])]
    assert [e.message for b in out for e in b] == expected
    return out


def test_many_small_lines_split_at_10000() -> None:
    out = _check_all([_line(1000 + i // 100, f"line {i}") for i in range(25_001)])
    assert [len(b) for b in out] == [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS, 5_001]


def test_large_lines_split_by_bytes() -> None:
    out = _check_all([_line(1, "x" * MAX_MESSAGE_BYTES) for _ in range(9)])
    assert [len(b) for b in out] == [4, 4, 1]
    assert sum(e.size for e in out[0]) <= MAX_BATCH_BYTES


def test_a_line_longer_than_a_batch_is_shipped_in_pieces_across_batches() -> None:
    # Invalid UTF-8 triples in size once decoded: 1 MiB of it is 3 MiB of events.
    raw = iso_utc_ms(0.002).encode() + b" out " + b"\xff" * (1024 * 1024)
    out = _check_all([_line(1, "a"), raw, _line(3, "b")])
    assert len(out) >= 3
    assert out[-1][-1].message == "b"


def test_batches_never_span_more_than_a_day() -> None:
    out = _check_all([_line(0, "a"), _line(MAX_BATCH_SPAN_MS + 1, "b")])
    assert len(out) == 2


def test_random_mixes_stay_within_limits() -> None:
    rng = random.Random(7)
    lines = []
    for i in range(400):
        size = rng.choice([1, 80, 4_000, 100_000, MAX_MESSAGE_BYTES, 300_000])
        lines.append(_line(i, "y" * size))
    _check_all(lines)


def test_event_times_never_go_backwards() -> None:
    packed = pack([_line(5000, "late"), _line(1000, "clock stepped back")], 0, Clock())
    assert [e.timestamp_ms for e in packed.events] == [5000, 5000]


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


def _record(path: Path) -> Shipping:
    return Shipping(log_group="g", log_stream="s", path=str(path))


def _messages(source: LineSource) -> list[str]:
    """Read and accept batches until none is left."""
    messages: list[str] = []
    while (read := source.read())[0].events:
        messages += [e.message for e in read[0].events]
        source.advance(read[1])
    if source.exhausted():
        source.close()
    return messages


def test_the_source_reads_whole_lines_in_order_and_resumes_after_a_restart(
    tmp_path: Path,
) -> None:
    async def go() -> tuple[list[str], list[str], Shipping]:
        output = OutputLog(tmp_path / "o.log", 512 * 1024, 0, spool_max_bytes=1 << 20)
        record = _record(output.path)
        source = LineSource(record, output)
        output.feed(b"out", b"one\r two\nthr")
        first = _messages(source)
        output.feed(b"out", b"ee\n" + b"z" * 300_000 + b"\nfour\n")
        packed, _ = source.read()
        assert [len(e.message) for e in packed.events] == [5, 262118, 300_000 - 262118, 4]
        output.close()
        source.close()
        return first, [e.message for e in packed.events], record

    first, second, record = asyncio.run(go())
    assert first == ["one\r two"]  # a bare CR is not a line end; "thr" is not a line yet
    assert second[0] == "three" and second[-1] == "four"
    # The second batch was never accepted: a restart ships it from the recorded position.
    assert _messages(LineSource(record.model_copy(), None)) == second
    # A finished file's last line counts even without a newline.
    with open(record.path, "ab") as file:
        file.write(b"2026-01-01T00:00:00.000Z out last")
    assert _messages(LineSource(record, None))[-1] == "last"


def test_when_the_file_fails_lines_come_from_the_spool_and_overflow_is_counted(
    tmp_path: Path,
) -> None:
    async def go() -> tuple[list[str], OutputLog]:
        output = OutputLog(tmp_path / "o.log", 1024, 0, spool_max_bytes=64 * 1024)
        source = LineSource(_record(output.path), output)
        output.feed(b"out", b"in the file\n")
        # As if the disk had filled up: the next write fails.
        os.close(output._fd)
        output._fd = os.open(os.devnull, os.O_RDONLY)
        for i in range(2000):  # ~90 KB: more than the spool holds
            output.feed(b"out", f"spooled line {i:05d} ".encode() + b"." * 20 + b"\n")
        output.close()
        messages = _messages(source)
        assert source.exhausted()
        return messages, output

    messages, output = asyncio.run(go())
    assert output.problem is not None and "Bad file descriptor" in output.problem
    assert messages[0] == "in the file"
    assert "lines of output are missing here" in messages[1]
    assert str(output.dropped_lines) in messages[1]
    spooled = messages[2:]
    first = 2000 - len(spooled)
    assert first == output.dropped_lines
    assert spooled == [f"spooled line {i:05d} " + "." * 20 for i in range(first, 2000)]
    assert output.spool_bytes == 0  # shipped lines are freed


def test_the_put_log_events_body_is_the_one_botocore_writes() -> None:
    # The agent swaps botocore's serialised PutLogEvents body for one built in bulk
    # (agent.aws.LogBatches): it must be the JSON botocore would have sent (compact: botocore
    # puts spaces after its separators).
    import botocore.session
    from botocore.serialize import create_serializer

    messages = ["plain", 'quote " and \\ backslash', "tab\tbell\x07", "naïve ünïcode ✓", "ok"]
    times = [1_700_000_000_000, 1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_001, 5]
    events = Events(times, messages, [len(m.encode()) + EVENT_OVERHEAD_BYTES for m in messages])
    operation = botocore.session.get_session().get_service_model("logs")
    params = {
        "logGroupName": "/rsql/jobs",
        "logStreamName": 'wf/"exec"/job.sh',
        "logEvents": [{"timestamp": t, "message": m} for t, m in zip(times, messages, strict=True)],
    }
    expected = create_serializer("json").serialize_to_request(
        params, operation.operation_model("PutLogEvents")
    )["body"]
    body = put_log_events_body("/rsql/jobs", 'wf/"exec"/job.sh', events)
    assert json.loads(body) == json.loads(expected)
    assert body.isascii()  # non-ASCII escaped, as botocore does
