"""The chaos soak's invariants, checked against what the emulator, CloudWatch, the scripts'
own records and the overlap monitor say once every fault is lifted and every run has ended."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.items import from_item, to_item

# How the agent fails back a job it found running after a restart (agent/reconcile.py).
RESTARTED = "The agent restarted while the job ran"


@dataclass
class Verdict:
    name: str
    held: bool
    detail: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Attempt:
    """One try of a job, from the execution's history."""

    job: str
    number: int
    outcome: str = "open"  # succeeded, failed, timed_out
    error: str = ""
    cause: str = ""
    ended_at: float = 0.0  # epoch seconds


@dataclass
class Run:
    """One execution of the soak: its workflow, jobs and, after the checks, its attempts."""

    workflow_id: str
    name: str
    arn: str
    jobs: list[str]
    status: str = "RUNNING"
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)


def history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def attempts(events: list[dict[str, Any]]) -> dict[str, list[Attempt]]:
    """Every try of every job, in order, with how it ended (events chain by previousEventId)."""
    by_id = {e["id"]: e for e in events}
    tries: dict[int, Attempt] = {}
    by_job: dict[str, list[Attempt]] = defaultdict(list)
    for event in events:
        kind = event["type"]
        if kind == "ActivityScheduled":
            task = json.loads(event["activityScheduledEventDetails"]["input"])
            # The state machine numbers the tries: retry_count is $$.State.RetryCount.
            attempt = Attempt(task["job_name"], int(task.get("retry_count", -1)) + 1)
            tries[event["id"]] = attempt
            by_job[attempt.job].append(attempt)
        elif kind in ("ActivitySucceeded", "ActivityFailed", "ActivityTimedOut"):
            origin = event.get("previousEventId")
            while origin in by_id and origin not in tries:
                origin = by_id[origin].get("previousEventId")
            if origin in tries:
                details: dict[str, Any] = next(
                    (v for k, v in event.items() if k.endswith("EventDetails")), {}
                )
                ended = tries[origin]
                ended.outcome = {"ActivitySucceeded": "succeeded", "ActivityFailed": "failed"}.get(
                    kind, "timed_out"
                )
                ended.error = details.get("error", "States.Timeout" if kind.endswith("Out") else "")
                ended.cause = details.get("cause", "")
                ended.ended_at = event["timestamp"].timestamp()
    return dict(by_job)


def audit_rows(ddb: Any, table: str, run: Run) -> dict[str, dict[str, Any]]:
    rows = {}
    for job in run.jobs:
        key = to_item({"job_name": job, "workflow_execution_id": run.name})
        item = ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        rows[job] = from_item(item) if item else {}
    return rows


def stream_lines(logs: Any, group: str, stream: str) -> list[str]:
    """Every message of a log stream, oldest first ([] if there is no such stream)."""
    messages: list[str] = []
    kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
    try:
        while True:
            page = logs.get_log_events(**kwargs)
            messages += [e["message"] for e in page["events"]]
            if not page["events"] or page.get("nextForwardToken") == kwargs.get("nextToken"):
                return messages
            kwargs["nextToken"] = page["nextForwardToken"]
    except logs.exceptions.ResourceNotFoundException:
        return []


def line_order(messages: list[str], job: str) -> tuple[list[int], int, list[str]]:
    """The line numbers a stream holds once repeats are dropped, how many messages were
    repeats, and what is wrong (a gap, a line out of order, an unknown message)."""
    prefix, suffix = "line ", f" of {job}"
    seen: list[int] = []
    repeats = 0
    problems: list[str] = []
    for message in messages:
        if not (message.startswith(prefix) and message.endswith(suffix)):
            problems.append(f"unexpected message {message[:80]!r}")
            continue
        number = int(message[len(prefix) : -len(suffix)])
        expected = seen[-1] + 1 if seen else 1
        if number == expected:
            seen.append(number)
        elif number < expected:
            repeats += 1  # a batch sent again after its answer was lost
        else:
            problems.append(f"line {number} after line {expected - 1}: lines missing")
            seen.append(number)
    return seen, repeats, problems


@dataclass(frozen=True)
class Mark:
    """A line of the scripts' own record: a run's start or end, on which host, when."""

    what: str
    host: str
    at: float  # epoch seconds


def read_runs(path: Path) -> dict[tuple[str, str], list[Mark]]:
    """(execution, job) -> its marks in order, from the scripts' own record."""
    runs: dict[tuple[str, str], list[Mark]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 6:
                what, execution, job, host, _, at = parts
                runs[(execution, job)].append(Mark(what, host, float(at)))
    return runs


@dataclass
class SecondRuns:
    """Scripts that ran more than once, each with why; and the ones that must not have."""

    lines: list[str] = field(default_factory=list)
    completed_twice: int = 0
    finished_but_failed_back: list[str] = field(default_factory=list)


def ran_twice(
    runs: dict[tuple[str, str], list[Mark]], by_name: dict[str, Run], faults_on: Any
) -> SecondRuns:
    """Every script that started more than once, with the earlier attempts' ends and the
    faults its first host went through meanwhile (`faults_on(host, since, until)`). A
    finished script that the agent itself failed back (Agent.ShuttingDown after its end)
    breaks "a finished script is reported, not re-run"; one whose report could not reach
    the service before its heartbeat timeout (States.Timeout) is the documented case."""
    found = SecondRuns()
    for (execution, job), marks in sorted(runs.items()):
        starts = [m for m in marks if m.what == "start"]
        if len(starts) < 2:
            continue
        ends = [m for m in marks if m.what == "end"]
        found.completed_twice += len(ends) > 1
        run = by_name.get(execution)
        tries = [t for t in (run.attempts.get(job, []) if run else []) if t.outcome != "succeeded"]
        why = "; ".join(
            f"attempt {t.number} {t.outcome}: {t.error}"
            + (f" {_short(t.cause)}" if t.cause else "")
            for t in tries
        )
        faults = faults_on(starts[0].host, starts[0].at, starts[1].at)
        found.lines.append(
            f"{job} of {execution}: started {len(starts)}x "
            f"({','.join(m.host for m in starts)}), ended {len(ends)}x: {why}; "
            f"{starts[0].host} meanwhile: {faults or 'no fault of its own'}"
        )
        for attempt in tries:
            before = [m for m in marks if m.at <= attempt.ended_at]
            if before and before[-1].what == "end" and attempt.cause.startswith(RESTARTED):
                found.finished_but_failed_back.append(f"{job} of {execution}")
    return found


def _short(cause: str) -> str:
    first = cause.split("\n", 1)[0]
    return f'"{first[:90]}"' if first else ""


def count_by(values: list[str]) -> str:
    return ", ".join(f"{n} {k}" for k, n in Counter(values).most_common()) or "none"
