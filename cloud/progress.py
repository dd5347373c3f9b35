"""Watching a run (`workflow start --wait`): one snapshot of every job's status per poll,
shown as a view redrawn in place on a terminal, or as one line per change anywhere else."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from agent import schema
from agent.schema import JobAudit as J
from cloud.config import Workflow
from cloud.reports import NOT_RUN, JobStatus, format_duration, job_rows, job_statuses
from cloud.stack import Stack

WAIT_POLL_S: Final = 0.5
_COLOURS: Final = {
    schema.COMPLETED: "32",
    schema.RUNNING: "33",
    schema.FAILED: "31",
    schema.TIMED_OUT: "31",
    schema.CANCELLED: "35",
    schema.ABANDONED: "35",
    schema.SKIPPED: "2",
}


@dataclass(frozen=True)
class Snapshot:
    """One look at a run: Step Functions' status and every job's."""

    workflow: Workflow
    execution_name: str
    status: str
    elapsed_s: float
    jobs: list[JobStatus]


def snapshot(
    stack: Stack, workflow: Workflow, execution_name: str, status: str, elapsed_s: float
) -> Snapshot:
    rows = job_rows(stack, workflow.job_names, execution_name)
    return Snapshot(
        workflow,
        execution_name,
        status,
        elapsed_s,
        job_statuses(workflow, workflow.job_names, rows),
    )


class ProgressView:
    """Jobs by stage with their status. On a terminal the view is redrawn in place; anywhere
    else (a CI log, a pipe) only what changed is printed, one line per change."""

    def __init__(
        self, write: Callable[[str], Any], *, tty: bool, width: int = 100, height: int = 40
    ) -> None:
        self._write = write
        self._tty = tty
        self._width = max(width, 40)
        self._height = max(height, 5)
        self._drawn = 0
        self._seen: dict[str, str] = {}
        self._status = ""

    def show(self, snap: Snapshot) -> None:
        if self._tty:
            self._redraw(snap)
        else:
            self._changes(snap)

    def _redraw(self, snap: Snapshot) -> None:
        # Lines are cut to the terminal's width: a wrapped line would break the cursor-up count.
        # A frame taller than the screen cannot be redrawn in place: list only the jobs that
        # run or failed then, under one summary line per stage.
        lines = frame(snap)
        if len(lines) >= self._height:
            lines = compact_frame(snap)[: self._height - 1]
        lines = [line[: self._width - 1] if len(line) >= self._width else line for line in lines]
        up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        coloured = [_colour(line) for line in lines]
        self._write(up + "\n".join(coloured) + "\n")
        self._drawn = len(lines)

    def _changes(self, snap: Snapshot) -> None:
        # The run's status line leads while it runs and comes last once it has ended.
        stamp = time.strftime("%H:%M:%S")
        ended = snap.status != "RUNNING"
        if not ended:
            self._status_change(stamp, snap)
        for job in snap.jobs:
            if self._seen.get(job.job_name, NOT_RUN) != job.status:
                stage = "" if job.stage_index is None else f"stage {job.stage_index + 1} "
                self._write(
                    f"{stamp} {stage}{job.job_name}: {job.status}{_detail(job, with_time=False)}\n"
                )
                self._seen[job.job_name] = job.status
        if ended:
            self._status_change(stamp, snap)

    def _status_change(self, stamp: str, snap: Snapshot) -> None:
        if snap.status != self._status:
            self._write(f"{stamp} execution {snap.execution_name}: {snap.status}\n")
            self._status = snap.status


def frame(snap: Snapshot) -> list[str]:
    """The whole view as lines: a header, then each stage and its jobs."""
    # Status first: a narrow terminal cuts the end of the line, never the news.
    lines = [
        f"{snap.status}  {format_duration(snap.elapsed_s)}  workflow {snap.workflow.workflow_id}  "
        f"execution {snap.execution_name}"
    ]
    by_stage: dict[int | None, list[JobStatus]] = {}
    for job in snap.jobs:
        by_stage.setdefault(job.stage_index, []).append(job)
    count = len(snap.workflow.workflow_stages)
    width = max((len(job.job_name) for job in snap.jobs), default=10)
    for index, stage in enumerate(snap.workflow.workflow_stages):
        kind = stage.execution_type if stage.enabled else f"{stage.execution_type}, disabled"
        lines.append(f"Stage {index + 1}/{count} ({kind})  {stage.stage_description}".rstrip())
        for job in by_stage.get(index, []):
            lines.append(
                f"  {job.status:<10} {job.job_name:<{width}}{_detail(job, with_time=True)}"
            )
    return lines


def compact_frame(snap: Snapshot) -> list[str]:
    """`frame` for big workflows: per stage the count of jobs in each status, and only the
    jobs that are running or did not succeed."""
    lines = frame(snap)[:1]
    count = len(snap.workflow.workflow_stages)
    notable = {schema.RUNNING, schema.FAILED, schema.TIMED_OUT, schema.CANCELLED}
    for index, stage in enumerate(snap.workflow.workflow_stages):
        jobs = [job for job in snap.jobs if job.stage_index == index]
        tally: dict[str, int] = {}
        for job in jobs:
            tally[job.status] = tally.get(job.status, 0) + 1
        counts = ", ".join(f"{status} {n}" for status, n in tally.items())
        lines.append(f"Stage {index + 1}/{count} ({stage.execution_type})  {counts}")
        lines += [
            f"  {job.status:<10} {job.job_name}{_detail(job, with_time=True)}"
            for job in jobs
            if job.status in notable
        ]
    return lines


def _detail(job: JobStatus, *, with_time: bool) -> str:
    parts = []
    exit_code = job.row.get(J.EXIT_CODE)
    if exit_code is not None and job.status != schema.COMPLETED:
        parts.append(f"exit {exit_code}")
    duration = job.row.get(J.DURATION_MS)
    if isinstance(duration, int | float) and job.status != schema.RUNNING:
        parts.append(format_duration(duration / 1000))
    elif (
        with_time
        and job.status == schema.RUNNING
        and (started := _parse_ts(job.row.get(J.EXECUTION_START_TS)))
    ):
        parts.append(format_duration(time.time() - started))
    attempt = job.row.get(J.ATTEMPT)
    if isinstance(attempt, int) and attempt > 1:
        parts.append(f"attempt {attempt}")
    if job.row.get(J.INSTANCE_ID) and with_time:
        parts.append(str(job.row[J.INSTANCE_ID]))
    return ("  " + "  ".join(parts)) if parts else ""


def _colour(line: str) -> str:
    if not line.startswith("  "):
        return f"\x1b[1m{line}\x1b[0m"
    word = line.split()[0]
    code = _COLOURS.get(word)
    return line.replace(word, f"\x1b[{code}m{word}\x1b[0m", 1) if code else line


def _parse_ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class WaitResult:
    """How a watched run ended; `described` is None when the wait timed out."""

    described: dict[str, Any] | None
    last: Snapshot

    @property
    def timed_out(self) -> bool:
        return self.described is None


def wait_for_run(
    stack: Stack,
    workflow: Workflow,
    execution_name: str,
    view: ProgressView,
    *,
    timeout_s: float | None = None,
    poll_s: float = WAIT_POLL_S,
) -> WaitResult:
    """Show progress until the run ends (or `timeout_s` passes); the run itself goes on."""
    started = time.monotonic()
    arn = stack.execution_arn(execution_name)
    while True:
        described: dict[str, Any] = dict(stack.aws.sfn.describe_execution(executionArn=arn))
        elapsed = time.monotonic() - started
        snap = snapshot(stack, workflow, execution_name, described["status"], elapsed)
        view.show(snap)
        if described["status"] != "RUNNING":
            return WaitResult(described, snap)
        if timeout_s is not None and elapsed >= timeout_s:
            return WaitResult(None, snap)
        remaining = poll_s if timeout_s is None else min(poll_s, max(timeout_s - elapsed, 0.0))
        time.sleep(remaining)
