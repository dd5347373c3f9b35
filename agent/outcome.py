"""What a job's end means: its audit status, its completion, the words of its cause.

One place turns how a script ended into what is reported, both for a job that ends under this
agent and for one whose end a restarted agent finds in the journal (the same inputs give the
same report).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent import errors, schema
from agent.errors import CancelReason
from agent.journal import AuditEnd, Completion, ScriptEnd
from agent.launch import failure_sentence


@dataclass
class Outcome:
    status: schema.Status
    error: errors.JobError | None = None
    exit_code: int | None = None
    duration_ms: int = 0
    output: dict[str, Any] | None = None
    cause: str | None = None
    report: bool = True  # False once the service closed the task (or will: lost contact)

    def audit_end(self) -> AuditEnd:
        return AuditEnd(
            status=self.status,
            duration_ms=self.duration_ms,
            exit_code=self.exit_code,
            error=self.error.code if self.error else None,
            cause=self.error.cause if self.error else self.cause,
        )

    def completion(self) -> Completion | None:
        """What SendTaskSuccess/Failure must say, or None when nothing may be reported."""
        if not self.report:
            return None
        if self.error is None:
            return success(self.output or {})
        return failure(self.error)


def success(output: dict[str, Any]) -> Completion:
    return Completion(kind="success", output=json.dumps(output, separators=(",", ":")))


def failure(error: errors.JobError) -> Completion:
    return Completion(kind="failure", error=error.code[: errors.MAX_ERROR_CHARS], cause=error.cause)


@dataclass(frozen=True)
class JobFacts:
    """What a report says about the job besides how its script ended."""

    job_name: str
    timeout_s: float
    log_stream: str | None
    instance_id: str
    worker_name: str


def success_output(facts: JobFacts, status: str, duration_ms: int) -> dict[str, Any]:
    """SendTaskSuccess output (docs/contracts.md, "Activity task output")."""
    return {
        "job_name": facts.job_name,
        "status": status,
        "exit_code": 0,
        "duration_ms": duration_ms,
        "log_stream": facts.log_stream,
        "instance_id": facts.instance_id,
    }


def exit_sentence(exit_code: int, signal_name: str | None) -> str:
    """How the script ended, for a cause: `exit code 3`, or
    `exit code 143, killed by SIGTERM`."""
    if signal_name:
        return f"exit code {exit_code}, killed by {signal_name}"
    return f"exit code {exit_code}"


def script_outcome(
    end: ScriptEnd, facts: JobFacts, tail: str, cancel_detail: str = "", local_log_note: str = ""
) -> Outcome:
    """The outcome of a script that ran and ended as `end` says. `local_log_note` says why
    the local copy of its output is incomplete, if it is."""
    duration_ms = int(end.duration_s * 1000)
    how = exit_sentence(end.exit_code, end.signal_name)
    note = f" {local_log_note}" if local_log_note else ""
    base = Outcome(schema.FAILED, exit_code=end.exit_code, duration_ms=duration_ms)
    reason = CancelReason[end.cancel_reason] if end.cancel_reason else None
    if end.cancelled and reason in (CancelReason.TASK_GONE, CancelReason.LOST_CONTACT):
        assert reason is not None
        base.status, base.report = schema.CANCELLED, False
        base.cause = f"Cancelled: {reason.value} ({cancel_detail}); {how}.{note}"
    elif end.cancelled:
        base.status = schema.CANCELLED
        base.error = errors.ShuttingDown(
            f"The agent on {facts.worker_name} is shutting down; the script was stopped after "
            f"{duration_ms} ms ({how}). Another host may retry it.{note}",
            output_tail=tail,
            exit_code=end.exit_code,
        )
    elif end.timed_out:
        base.status = schema.TIMED_OUT
        base.error = errors.ScriptTimeout(
            f"The script {facts.job_name} ran past its timeout of {facts.timeout_s:g} s; its "
            f"process group was killed ({how}).{note}",
            output_tail=tail,
            exit_code=end.exit_code,
        )
    elif end.exit_code != 0:
        base.error = errors.ScriptFailed(
            failure_sentence(facts.job_name, how, tail) + note,
            output_tail=tail,
            exit_code=end.exit_code,
        )
    else:
        base.status = schema.COMPLETED
        base.cause = local_log_note or None
        base.output = success_output(facts, schema.COMPLETED, duration_ms)
    return base
