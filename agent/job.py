"""One task, from the moment a poll returns it to its completion.

`RunningJob` is the one object that owns a held task: its token (the key the agent files it
under), its process group once the script runs, and the reason it was cancelled if it was.
`execute` is the whole life of a job, top to bottom:

    parse and validate the input         (RSQL.InvalidInput; no audit row without a key)
    start heartbeating (and the fence)   (until the completion is delivered)
    resolve the script                   (RSQL.InvalidInput / RSQL.ScriptNotFound, audited)
    restart? skip a job that completed in the run restarted from
    audit row Running                    (its attempt, hence the log stream)
    run the script, output to file and CloudWatch, until exit / timeout / cancel
    its end into the journal at once; wait briefly for the last lines to ship
    the audit row's end and SendTaskSuccess / SendTaskFailure, from the journal (agent.report)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from agent import errors, schema
from agent.aio import Interrupted, cancel_and_wait, unless
from agent.audit import JobAuditTable, JobKey
from agent.aws import Aws
from agent.errors import CancelReason
from agent.heartbeat import fence_after_s, heartbeat_interval_s, keep_alive
from agent.journal import Journal, ScriptEnd
from agent.launch import Launch, prepare_launch
from agent.logs import token_id
from agent.logship import LogShipping, shipping_record
from agent.outcome import JobFacts, Outcome, script_outcome, success_output
from agent.output import OutputLog
from agent.reaper import Reaper
from agent.report import Reporting, deliver_owed
from agent.runner import (
    ScriptResult,
    job_env,
    log_file_path,
    process_start_ticks,
    resolve_script,
    run_script,
)
from agent.settings import Settings
from agent.taskinput import TaskInput, parse_task_input

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class RunningJob:
    """A task this host holds. Keyed by its token in the agent's table of running jobs."""

    token: str
    raw_input: str
    task: TaskInput | None = None
    attempt: int | None = None
    log_stream: str | None = None
    pgid: int | None = None
    cancel_reason: CancelReason | None = None
    cancel_detail: str = ""
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    # Monotonic time the service last surely heard from us (the task was handed out before
    # the poll answered, so that counts as a beat).
    last_heartbeat: float = field(default_factory=time.monotonic)
    script_ended: bool = False
    outcome: Outcome | None = None  # once the job has ended
    log_path: Path | None = None  # its local log, once created
    # Gives the job's concurrency slot back (once; the agent's): called when the script is
    # over, so the next task runs while this one still reports.
    release_slot: Callable[[], None] = lambda: None

    @property
    def token_id(self) -> str:
        return token_id(self.token)

    def cancel(self, reason: CancelReason, detail: str = "") -> None:
        """Stop the job (its process group gets SIGTERM, then SIGKILL). The first reason
        wins: it decides what, if anything, is reported."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.cancel_detail = detail
            log.warning("job_cancel", token_id=self.token_id, reason=reason.name, detail=detail)
        self.cancelled.set()


@dataclass(frozen=True)
class JobContext:
    """What every job needs, built once by the agent."""

    settings: Settings
    aws: Aws
    audit: JobAuditTable
    reporting: Reporting
    journal: Journal
    shipping: LogShipping
    reaper: Reaper
    # The agent's own environment, and the secret's connection settings (read once).
    env: Mapping[str, str]
    connection_env: Mapping[str, str]
    instance_id: str


async def execute(ctx: JobContext, job: RunningJob) -> None:
    """Handle one received task to its end. Raises nothing but CancelledError."""
    structlog.contextvars.bind_contextvars(token_id=job.token_id)
    beat: asyncio.Task[None] | None = None
    try:
        try:
            task = job.task = parse_task_input(job.raw_input)
            structlog.contextvars.bind_contextvars(
                job_name=task.job_name, workflow_execution_id=task.workflow_execution_id
            )
            beat = _start_heartbeat(ctx, job, task)
            outcome = await _handle(ctx, job, task)
        except Exception as exc:
            error = errors.classify(exc)
            if not isinstance(exc, errors.JobError):
                log.exception("job_internal_error")
            outcome = Outcome(schema.FAILED, error=error, exit_code=error.exit_code)
        job.outcome = outcome
        log.info(
            "job_finished",
            status=outcome.status,
            exit_code=outcome.exit_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error.code if outcome.error else None,
        )
        # One write: what the end owes, before any of it is sent.
        audit_end = outcome.audit_end() if job.attempt is not None else None
        ctx.journal.update(job.token, audit_end=audit_end, completion=outcome.completion())
        await deliver_owed(ctx.reporting, job.token)
    finally:
        if beat is not None:
            await cancel_and_wait(beat)


def _start_heartbeat(ctx: JobContext, job: RunningJob, task: TaskInput) -> asyncio.Task[None]:
    interval = heartbeat_interval_s(ctx.settings.heartbeat_interval_s, task.heartbeat_seconds)
    fence = fence_after_s(task.heartbeat_seconds, ctx.settings.kill_grace_s)
    return asyncio.create_task(keep_alive(ctx.aws, job, interval, fence), name="keep-alive")


async def _handle(ctx: JobContext, job: RunningJob, task: TaskInput) -> Outcome:
    key = JobKey(task.job_name, task.workflow_execution_id, task.workflow_id, task.stage_index)
    try:
        script = resolve_script(ctx.settings.script_dir, task.job_name)
        if task.restart_of:
            # Interrupted by a drain or the fence, like the start write below.
            previous = await unless(
                job.cancelled, ctx.audit.previous_run(task.job_name, task.restart_of)
            )
            if previous.get(schema.JobAudit.EXECUTION_STATUS) == schema.COMPLETED:
                return await _skip(ctx, job, key, task, previous)
        launch = _prepare(ctx, job, task, script)
    except errors.JobError as exc:
        return await _failed_at_once(ctx, job, key, task, exc)
    except Interrupted:
        return _cancelled_before_start(job)
    try:
        return await _start_and_run(ctx, job, key, task, launch)
    finally:
        launch.cleanup()


async def _start_and_run(
    ctx: JobContext, job: RunningJob, key: JobKey, task: TaskInput, launch: Launch
) -> Outcome:
    try:
        job.attempt, job.log_stream = await unless(
            job.cancelled, ctx.audit.start(key, task.attempt, job.token_id)
        )
    except Interrupted:
        return _cancelled_before_start(job)
    except errors.StaleAttempt as stale:
        log.warning("job_attempt_stale", attempt=task.attempt, detail=str(stale))
        return Outcome(schema.CANCELLED, report=False)
    ctx.journal.note(job.token, attempt=job.attempt, log_stream=job.log_stream)
    return await _run(ctx, job, task, launch)


async def _failed_at_once(
    ctx: JobContext, job: RunningJob, key: JobKey, task: TaskInput, error: errors.JobError
) -> Outcome:
    """A job that fails before its script starts: one final audit row, no log stream."""
    outcome = Outcome(schema.FAILED, error=error)
    await ctx.audit.record_at_once(key, outcome.audit_end(), None, task.attempt, job.token_id)
    return outcome


def _prepare(ctx: JobContext, job: RunningJob, task: TaskInput, script: Path) -> Launch:
    env = job_env(
        ctx.env, ctx.connection_env, task.workflow_id, task.workflow_execution_id, task.job_name
    )
    try:
        return prepare_launch(
            ctx.settings,
            job.token,
            task.job_name,
            script,
            env,
            args=task.args,
            legacy_args=task.legacy_args,
            variables=task.variables,
        )
    except OSError as exc:
        raise errors.InvalidScript(f"Cannot read {task.job_name}: {exc.strerror}.") from None


async def _run(ctx: JobContext, job: RunningJob, task: TaskInput, launch: Launch) -> Outcome:
    settings = ctx.settings
    assert job.attempt is not None and job.log_stream is not None
    path = log_file_path(
        settings.log_dir, task.workflow_id, task.workflow_execution_id, task.job_name, job.attempt
    )
    output = OutputLog(
        path, settings.log_max_line_bytes, settings.output_tail_lines, settings.log_spool_max_bytes
    )
    job.log_path = path
    record = shipping_record(settings.log_group, job.log_stream, path)
    ctx.journal.update(job.token, shipping=record)
    shipper = ctx.shipping.start(job.token, record, output)
    log.info("job_started", attempt=job.attempt, log_stream=job.log_stream, log_file=str(path))
    try:
        result = await run_script(
            launch.argv,
            cwd=settings.script_dir,
            env=launch.env,
            output=output,
            timeout_s=task.timeout_seconds,
            cancel=job.cancelled,
            kill_grace_s=settings.kill_grace_s,
            on_spawn=lambda pgid: _spawned(ctx, job, pgid),
            on_exit=lambda result: _exited(ctx, job, result),
        )
    finally:
        output.close()
        if job.pgid is not None:
            ctx.reaper.unwatch(job.pgid)
    job.release_slot()  # its processes are gone and its pipes drained
    outcome = script_outcome(
        script_end(job, result),
        _facts(ctx, job, task),
        output.tail(),
        job.cancel_detail,
        local_log_note(output),
    )
    # A workflow that moves on has its logs, unless CloudWatch is slow: then they follow.
    await shipper.flush(settings.log_flush_wait_s)
    return outcome


def _spawned(ctx: JobContext, job: RunningJob, pgid: int) -> None:
    job.pgid = pgid
    ctx.reaper.watch(pgid)
    ctx.journal.update(job.token, pgid=pgid, pgid_start_ticks=process_start_ticks(pgid))


def _exited(ctx: JobContext, job: RunningJob, result: ScriptResult) -> None:
    # The moment the script's end is known it is in the journal: a restart reports it
    # rather than running the script again.
    job.script_ended = True
    ctx.journal.update(job.token, script_end=script_end(job, result))


def script_end(job: RunningJob, result: ScriptResult) -> ScriptEnd:
    reason = job.cancel_reason.name if result.cancelled and job.cancel_reason else None
    return ScriptEnd(
        exit_code=result.exit_code,
        signal_name=result.signal_name,
        timed_out=result.timed_out,
        cancelled=result.cancelled,
        cancel_reason=reason,
        duration_s=result.duration_s,
    )


def local_log_note(output: OutputLog) -> str:
    """Says why the local copy of the output is incomplete, if it is."""
    if output.problem is None:
        return ""
    note = f"The local log file is incomplete: {output.problem}; CloudWatch has the output"
    if output.dropped_lines:
        note += f" except {output.dropped_lines} lines that could not be held in memory"
    return note + "."


def _facts(ctx: JobContext, job: RunningJob, task: TaskInput) -> JobFacts:
    return JobFacts(
        task.job_name,
        task.timeout_seconds,
        job.log_stream,
        ctx.instance_id,
        ctx.settings.worker_name,
    )


async def _skip(
    ctx: JobContext, job: RunningJob, key: JobKey, task: TaskInput, previous: dict[str, Any]
) -> Outcome:
    """A restart runs only what did not complete: this job did, in the run restarted from."""
    stream = previous.get(schema.JobAudit.LOG_STREAM)
    outcome = Outcome(schema.SKIPPED, exit_code=0)
    await ctx.audit.record_at_once(key, outcome.audit_end(), stream, task.attempt, job.token_id)
    facts = JobFacts(key.job_name, task.timeout_seconds, stream, ctx.instance_id, "")
    outcome.output = success_output(facts, schema.SKIPPED, 0)
    return outcome


def _cancelled_before_start(job: RunningJob) -> Outcome:
    if job.cancel_reason in (CancelReason.TASK_GONE, CancelReason.LOST_CONTACT):
        return Outcome(schema.CANCELLED, report=False)
    error = errors.ShuttingDown("The agent is shutting down; the script was not started.")
    return Outcome(schema.CANCELLED, error=error)
