"""What `rsql-cloud workflow report` draws: each job's place on the run's timeline, its host,
exit code, attempts and log stream, the run's critical path, and each job's duration over the
workflow's last runs. `cloud.report_html` turns it into the page.

The critical path is the chain of jobs whose durations set the run's wall time. It starts at
the job that ended last and walks back, each step to the job the current one waited for:
- in a sequential stage, the job before it in the stage (that ran);
- in a parallel stage bounded by `max_parallel` (below its job count), the job of the stage
  that ended last at or before it started: the one that freed its slot;
- otherwise (the first job of a sequential stage, a job of an unbounded parallel stage, a
  bounded one that never waited), the job of the earlier stages that ended last.
Jobs that did not run (Skipped by a restart, not reached) are never on it. What lies between
two links is the orchestration's own time (state transitions, the agents' polls).
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from agent import schema
from agent.schema import JobAudit as J
from agent.schema import WorkflowAudit as W
from cloud.config import Workflow
from cloud.history import Run, job_rows_over_runs, parse_ts, workflow_runs
from cloud.reports import JobStatus, RunStatus, run_status
from cloud.stack import Stack

DEFAULT_RUNS: Final = 20
SEQUENTIAL: Final = "sequential"
PARALLEL: Final = "parallel"
# The console of each partition; the region goes in the host name only in the commercial one.
_CONSOLES: Final = {
    "aws": "https://{region}.console.aws.amazon.com",
    "aws-cn": "https://console.amazonaws.cn",
    "aws-us-gov": "https://console.amazonaws-us-gov.com",
}


@dataclass(frozen=True)
class StageInfo:
    index: int
    description: str
    execution_type: str  # "" when today's config no longer describes the run
    max_parallel: int
    enabled: bool
    jobs: tuple[str, ...]

    @property
    def unbounded(self) -> bool:
        """A parallel stage whose jobs never wait for one another."""
        return self.execution_type == PARALLEL and (
            self.max_parallel == 0 or self.max_parallel >= len(self.jobs)
        )


@dataclass(frozen=True)
class Span:
    """A job's time in the run, in seconds from the run's start."""

    job: str
    stage_index: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Point:
    """One run's duration of a job (None when it has no row or no duration in that run)."""

    execution_id: str
    duration_ms: int | None
    status: str


@dataclass
class JobReport:
    job: str
    stage_index: int | None
    status: str
    row: dict[str, Any]
    span: Span | None
    log_url: str | None
    history: list[Point] = field(default_factory=list)
    critical: bool = False


@dataclass
class RunReport:
    execution_id: str
    workflow_id: str
    status: str
    start_ts: str | None
    end_ts: str | None
    error: str | None
    cause: str | None
    region: str
    wall_s: float
    stages: list[StageInfo]
    jobs: list[JobReport]
    critical_path: list[str]
    runs: list[Run]  # the history shown, oldest first (this run last)
    generated_ts: str


def build_report(
    stack: Stack,
    execution_id: str,
    runs: int = DEFAULT_RUNS,
    *,
    now: dt.datetime | None = None,
    note: Callable[[str], None] = lambda message: None,
) -> RunReport:
    """Everything the page shows; a CloudError when the execution is unknown. `note` hears
    what the operator should know (the runs were found by a Scan)."""
    status = run_status(stack, execution_id)
    now = now or dt.datetime.now(dt.UTC)
    row = status.workflow_row or {}
    execution = status.to_dict()["execution"] or {}
    start_ts = row.get(W.EXECUTION_START_TS) or execution.get("start_date")
    end_ts = row.get(W.EXECUTION_END_TS) or execution.get("stop_date")
    streams = _log_streams(stack, status)
    jobs = [_job_report(stack, status, job, start_ts, now, streams) for job in status.jobs]
    stages = _stages(stack.workflow_or_none(status.workflow_id), status.jobs)
    path = critical_path([j.span for j in jobs if j.span and _ran(j)], stages)
    for job in jobs:
        job.critical = job.job in path
    ends = [j.span.end_s for j in jobs if j.span]
    wall_s = _seconds(start_ts, end_ts) if start_ts and end_ts else max(ends, default=0.0)
    history = _history(stack, status, str(start_ts or ""), runs, note)
    _attach_history(stack, jobs, history)
    return RunReport(
        execution_id=execution_id,
        workflow_id=status.workflow_id,
        status=str(row.get(W.EXECUTION_STATUS) or execution.get("status") or "-"),
        start_ts=_text(start_ts),
        end_ts=_text(end_ts),
        error=_text(row.get(W.ERROR) or execution.get("error")),
        cause=_text(row.get(W.CAUSE) or execution.get("cause")),
        region=stack.aws.region,
        wall_s=max(wall_s, *ends, 0.0),
        stages=stages,
        jobs=jobs,
        critical_path=path,
        runs=list(reversed(history)),
        generated_ts=schema.iso_utc_ms(now),
    )


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _seconds(since: str, until: str) -> float:
    return (parse_ts(until) - parse_ts(since)).total_seconds()


def _ran(job: JobReport) -> bool:
    return job.status != schema.SKIPPED


def _log_streams(stack: Stack, status: RunStatus) -> set[str]:
    """The run's log streams that exist: a job that printed nothing has none to link to."""
    prefix = f"{status.workflow_id}/{status.execution_name}/"
    pages = stack.aws.logs.get_paginator("describe_log_streams")
    names: set[str] = set()
    try:
        for page in pages.paginate(logGroupName=stack.names.log_group, logStreamNamePrefix=prefix):
            names.update(s.get("logStreamName", "") for s in page.get("logStreams", []))
    except stack.aws.logs.exceptions.ResourceNotFoundException:
        pass  # no log group: nothing was ever printed
    return names


def _job_report(
    stack: Stack,
    status: RunStatus,
    job: JobStatus,
    run_start: Any,
    now: dt.datetime,
    streams: set[str],
) -> JobReport:
    row = job.row
    span = None
    started = row.get(J.EXECUTION_START_TS)
    if started and run_start:
        ended = row.get(J.EXECUTION_END_TS) or schema.iso_utc_ms(now)
        start_s = _seconds(str(run_start), str(started))
        span = Span(job.job_name, job.stage_index or 0, start_s, _seconds(str(run_start), ended))
    stream = row.get(J.LOG_STREAM)
    if not stream and row:
        attempt = int(row.get(J.ATTEMPT) or 1)
        stream = schema.log_stream_name(
            status.workflow_id, status.execution_name, job.job_name, attempt
        )
    url = None
    if stream and stream in streams:
        region = stack.aws.region
        partition = stack.aws.session.get_partition_for_region(region)
        url = console_log_url(region, stack.names.log_group, str(stream), partition)
    return JobReport(job.job_name, job.stage_index, job.status, row, span, url)


def _stages(workflow: Workflow | None, jobs: list[JobStatus]) -> list[StageInfo]:
    """The run's stages: from today's config when it still lists the run's jobs, else from
    the rows' stage indexes (kinds unknown)."""
    if workflow is not None and workflow.job_names == [job.job_name for job in jobs]:
        return [
            StageInfo(
                index,
                stage.stage_description,
                stage.execution_type,
                stage.max_parallel,
                stage.enabled,
                tuple(stage.scripts),
            )
            for index, stage in enumerate(workflow.workflow_stages)
        ]
    grouped: dict[int, list[str]] = {}
    for job in jobs:
        grouped.setdefault(job.stage_index or 0, []).append(job.job_name)
    return [StageInfo(i, "", "", 0, True, tuple(names)) for i, names in sorted(grouped.items())]


def critical_path(spans: list[Span], stages: list[StageInfo]) -> list[str]:
    """The jobs of the critical path (see the module docstring), first to last."""
    if not spans:
        return []
    kinds = {stage.index: stage for stage in stages}
    current = max(spans, key=lambda s: (s.end_s, s.start_s))
    path = [current]
    while (before := _waited_for(current, spans, kinds.get(current.stage_index))) is not None:
        if before in path:  # zero-length jobs at one instant: stop rather than loop
            break
        path.append(before)
        current = before
    return [span.job for span in reversed(path)]


def _waited_for(span: Span, spans: list[Span], stage: StageInfo | None) -> Span | None:
    """The job `span` waited for (None at the start of the run)."""
    mine = [s for s in spans if s.stage_index == span.stage_index and s is not span]
    if stage is not None and stage.execution_type == SEQUENTIAL:
        # By the stage's order, not by the clocks: each host stamps its own rows.
        order = {job: i for i, job in enumerate(stage.jobs)}
        earlier = [s for s in mine if order.get(s.job, -1) < order.get(span.job, -1)]
        if earlier:
            return max(earlier, key=lambda s: order.get(s.job, -1))
    elif stage is None or not stage.unbounded:
        freed = [s for s in mine if s.end_s <= span.start_s]
        if freed:
            return max(freed, key=lambda s: s.end_s)
    before = [s for s in spans if s.stage_index < span.stage_index]
    return max(before, key=lambda s: (s.end_s, s.start_s)) if before else None


def console_log_url(region: str, log_group: str, stream: str, partition: str = "aws") -> str:
    """The CloudWatch console page of a log stream, in its region.

    The console takes the group and the stream in its `#logsV2:` fragment percent-encoded
    twice, with the outer `%` written `$` (a `/` is `$252F`): what its own address bar shows.
    """
    base = _CONSOLES.get(partition, _CONSOLES["aws"]).format(region=region)
    return (
        f"{base}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/"
        f"{_console_encode(log_group)}/log-events/{_console_encode(stream)}"
    )


def _console_encode(name: str) -> str:
    once = urllib.parse.quote(name, safe="")
    return urllib.parse.quote(once, safe="").replace("%", "$")


def _history(
    stack: Stack, status: RunStatus, start_ts: str, limit: int, note: Callable[[str], None]
) -> list[Run]:
    """This run and the workflow's runs before it, newest first (at most `limit`)."""
    if limit <= 0 or not start_ts:
        return []
    runs = workflow_runs(stack, status.workflow_id, limit, started_by=start_ts, note=note)
    if all(run.execution_id != status.execution_name for run in runs):
        # A run whose row has no start yet (or an index still backfilling) is still this run.
        mine = Run.from_row(
            {W.WORKFLOW_EXECUTION_ID: status.execution_name, **(status.workflow_row or {})}
        )
        runs = [mine, *runs][:limit]
    return runs


def _attach_history(stack: Stack, jobs: list[JobReport], runs: list[Run]) -> None:
    rows = job_rows_over_runs(stack, [job.job for job in jobs], runs)
    for job in jobs:
        for run in reversed(runs):  # oldest first, as a sparkline reads
            row = rows.get((run.execution_id, job.job), {})
            duration = row.get(J.DURATION_MS)
            status = str(row.get(J.EXECUTION_STATUS) or "-")
            # A Skipped job took no time of its own: a gap in its line, not a zero.
            if not isinstance(duration, int) or status == schema.SKIPPED:
                duration = None
            job.history.append(Point(run.execution_id, duration, status))
