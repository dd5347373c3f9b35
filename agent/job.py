"""One task, from the moment a poll returns it to its completion.

`RunningJob` is the one object that owns a held task: its token (the key the agent files it
under), its process group once the script runs, and the reason it was cancelled if it was.
`execute` is the whole life of a job, top to bottom:

    parse and validate the input         (RSQL.InvalidInput; no audit row without a key)
    start heartbeating
    resolve the script                   (RSQL.InvalidInput / RSQL.ScriptNotFound, audited)
    restart? skip a job that completed in the run restarted from
    audit row Running                    (returns the attempt, hence the log stream)
    run the script, output to file and CloudWatch, until exit / timeout / cancel
    final log flush and audit row, then SendTaskSuccess / SendTaskFailure
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent import completion, errors, schema
from agent.aio import cancel_and_wait
from agent.audit import JobAuditTable, JobEnd, JobKey
from agent.aws import Aws
from agent.completion import Completer
from agent.errors import CancelReason
from agent.heartbeat import heartbeat_interval_s, keep_alive
from agent.journal import Journal
from agent.launch import Launch, failure_sentence, prepare_launch
from agent.logs import token_id
from agent.logship import LogShipper
from agent.runner import (
    OutputLog,
    ScriptResult,
    exit_sentence,
    job_env,
    log_file_path,
    resolve_script,
    run_script,
)
from agent.settings import Settings

log = structlog.get_logger(__name__)

# The final CloudWatch flush may take this long before the completion goes out anyway.
FINAL_FLUSH_TIMEOUT_S = 30.0


class TaskInput(BaseModel):
    """The activity task's input (docs/contracts.md, "Activity task input"). Strict: a number
    where a string belongs, or the reverse, is a mistake in the state machine, not a value
    to coerce."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    workflow_id: str = Field(min_length=1, max_length=1024)
    workflow_execution_id: str = Field(min_length=1, max_length=1024)
    stage_index: int = Field(ge=0)
    job_name: str = Field(min_length=1, max_length=1024)
    args: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(gt=0)
    heartbeat_seconds: float | None = Field(default=None, gt=0)
    restart_of: str | None = None
    # Run the script as the AWS sample did: `<script> <legacy dir> <secret id> [args...]`.
    legacy_args: bool = False
    # `${NAME}` values for `.sql` jobs (the workflow's `variables`).
    variables: dict[str, str] = Field(default_factory=dict)


def parse_task_input(raw: str) -> TaskInput:
    """Validate the task input; raises InvalidInput naming every bad field."""
    try:
        return TaskInput.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors()
        )
        raise errors.InvalidInput(f"The task input is not valid: {problems}.") from None


@dataclass(eq=False)
class RunningJob:
    """A task this host holds. Keyed by its token in the agent's table of running jobs."""

    token: str
    raw_input: str
    received_at: float = field(default_factory=time.time)
    task: TaskInput | None = None
    attempt: int | None = None
    log_stream: str | None = None
    pgid: int | None = None
    cancel_reason: CancelReason | None = None
    cancel_detail: str = ""
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None  # once the job has ended
    log_path: Path | None = None  # its local log, once created

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
    completer: Completer
    journal: Journal
    # The agent's own environment, and the secret's connection settings (read once).
    env: Mapping[str, str]
    connection_env: Mapping[str, str]
    instance_id: str


@dataclass
class Outcome:
    status: schema.Status
    error: errors.JobError | None = None
    exit_code: int | None = None
    duration_ms: int = 0
    output: dict[str, Any] | None = None
    cause: str | None = None
    report: bool = True  # False once the service closed the task

    def audit_end(self) -> JobEnd:
        return JobEnd(
            status=self.status,
            duration_ms=self.duration_ms,
            exit_code=self.exit_code,
            error=self.error.code if self.error else None,
            cause=self.error.cause if self.error else self.cause,
        )


async def execute(ctx: JobContext, job: RunningJob) -> None:
    """Handle one received task to its end. Raises nothing but CancelledError."""
    structlog.contextvars.bind_contextvars(token_id=job.token_id)
    try:
        outcome = await _handle(ctx, job)
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
    if not outcome.report:
        ctx.journal.remove(job.token)
    elif outcome.error is None:
        await ctx.completer.send(job.token, completion.success(outcome.output or {}))
    else:
        await ctx.completer.send(job.token, completion.failure(outcome.error))


async def _handle(ctx: JobContext, job: RunningJob) -> Outcome:
    task = job.task = parse_task_input(job.raw_input)
    structlog.contextvars.bind_contextvars(
        job_name=task.job_name, workflow_execution_id=task.workflow_execution_id
    )
    ctx.journal.note(
        job.token, job_name=task.job_name, workflow_execution_id=task.workflow_execution_id
    )
    interval = heartbeat_interval_s(ctx.settings.heartbeat_interval_s, task.heartbeat_seconds)
    beat = asyncio.create_task(keep_alive(ctx.aws, job, interval), name="heartbeat")
    try:
        return await _handle_valid(ctx, job, task)
    finally:
        await cancel_and_wait(beat)


async def _handle_valid(ctx: JobContext, job: RunningJob, task: TaskInput) -> Outcome:
    key = JobKey(task.job_name, task.workflow_execution_id, task.workflow_id, task.stage_index)
    try:
        script = resolve_script(ctx.settings.script_dir, task.job_name)
    except errors.JobError as exc:
        return await _failed_at_once(ctx, key, exc)
    if task.restart_of:
        previous = await ctx.audit.previous_run(task.job_name, task.restart_of)
        if previous.get(schema.JobAudit.EXECUTION_STATUS) == schema.COMPLETED:
            return await _skip(ctx, key, previous)
    if job.cancel_reason is not None:
        return _cancelled_before_start(job)
    try:
        plan = _prepare(ctx, job, task, script)
    except errors.JobError as exc:
        return await _failed_at_once(ctx, key, exc)
    try:
        job.attempt, job.log_stream = await ctx.audit.start(key)
        ctx.journal.note(job.token, attempt=job.attempt)
        try:
            outcome = await _run(ctx, job, task, plan)
        except (
            Exception
        ) as exc:  # the log file cannot be created, ...: the row must not stay Running
            log.exception("job_internal_error")
            outcome = Outcome(schema.FAILED, error=errors.classify(exc))
        await _finish_audit(ctx, key, job, outcome)
        return outcome
    finally:
        plan.cleanup()


async def _failed_at_once(ctx: JobContext, key: JobKey, error: errors.JobError) -> Outcome:
    """A job that fails before its script starts: one final audit row, no log stream."""
    outcome = Outcome(schema.FAILED, error=error)
    await ctx.audit.record_at_once(key, outcome.audit_end(), None)
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
    output = OutputLog(path, settings.log_max_line_bytes, settings.output_tail_lines)
    job.log_path = path
    shipper = LogShipper(
        ctx.aws, settings.log_group, job.log_stream, output, settings.log_flush_interval_s
    )
    shipper.start()
    log.info("job_started", attempt=job.attempt, log_stream=job.log_stream, log_file=str(path))
    started = time.monotonic()
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
        )
        outcome = _outcome(ctx, job, task, result, output.tail())
    except Exception as exc:  # the shell could not start, the disk is full, ...
        log.exception("job_internal_error")
        outcome = Outcome(schema.FAILED, error=errors.classify(exc))
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
    except asyncio.CancelledError:
        # A forced stop: no waiting on CloudWatch; the local file has the output.
        shipper.abort()
        output.close()
        raise
    # Final flush before the completion: a workflow that moves on has its logs.
    await shipper.close(FINAL_FLUSH_TIMEOUT_S)
    output.close()
    return outcome


def _spawned(ctx: JobContext, job: RunningJob, pgid: int) -> None:
    job.pgid = pgid
    ctx.journal.update(job.token, pgid=pgid)


def _outcome(
    ctx: JobContext, job: RunningJob, task: TaskInput, result: ScriptResult, tail: str
) -> Outcome:
    duration_ms = int(result.duration_s * 1000)
    how = exit_sentence(result)
    base = Outcome(schema.FAILED, exit_code=result.exit_code, duration_ms=duration_ms)
    if result.cancelled and job.cancel_reason is CancelReason.TASK_GONE:
        base.status, base.report = schema.CANCELLED, False
        base.cause = f"Cancelled: {job.cancel_reason.value} ({job.cancel_detail}); {how}."
    elif result.cancelled:
        base.status = schema.CANCELLED
        base.error = errors.ShuttingDown(
            f"The agent on {ctx.settings.worker_name} is shutting down; the script was "
            f"stopped after {duration_ms} ms ({how}). Another host may retry it.",
            output_tail=tail,
            exit_code=result.exit_code,
        )
    elif result.timed_out:
        base.status = schema.TIMED_OUT
        base.error = errors.ScriptTimeout(
            f"The script {task.job_name} ran past its timeout of {task.timeout_seconds:g} s; "
            f"its process group was killed ({how}).",
            output_tail=tail,
            exit_code=result.exit_code,
        )
    elif result.exit_code != 0:
        base.error = errors.ScriptFailed(
            failure_sentence(task.job_name, how, tail),
            output_tail=tail,
            exit_code=result.exit_code,
        )
    else:
        base.status = schema.COMPLETED
        base.output = _success_output(
            ctx, task.job_name, schema.COMPLETED, duration_ms, job.log_stream
        )
    return base


def _success_output(
    ctx: JobContext, job_name: str, status: str, duration_ms: int, log_stream: str | None
) -> dict[str, Any]:
    """SendTaskSuccess output (docs/contracts.md, "Activity task output")."""
    return {
        "job_name": job_name,
        "status": status,
        "exit_code": 0,
        "duration_ms": duration_ms,
        "log_stream": log_stream,
        "instance_id": ctx.instance_id,
    }


async def _skip(ctx: JobContext, key: JobKey, previous: dict[str, Any]) -> Outcome:
    """A restart runs only what did not complete: this job did, in the run restarted from."""
    stream = previous.get(schema.JobAudit.LOG_STREAM)
    outcome = Outcome(schema.SKIPPED, exit_code=0)
    await ctx.audit.record_at_once(key, outcome.audit_end(), stream)
    outcome.output = _success_output(ctx, key.job_name, schema.SKIPPED, 0, stream)
    return outcome


def _cancelled_before_start(job: RunningJob) -> Outcome:
    if job.cancel_reason is CancelReason.TASK_GONE:
        return Outcome(schema.CANCELLED, report=False)
    error = errors.ShuttingDown("The agent is shutting down; the script was not started.")
    return Outcome(schema.CANCELLED, error=error)


async def _finish_audit(ctx: JobContext, key: JobKey, job: RunningJob, outcome: Outcome) -> None:
    """The job's result stands even if its audit row cannot be written: say so and go on."""
    assert job.attempt is not None
    try:
        await ctx.audit.finish(key, job.attempt, job.log_stream, outcome.audit_end())
    except Exception:
        log.exception("audit_finish_failed", status=outcome.status)
