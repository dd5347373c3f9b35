"""The error hierarchy: each class carries its SendTaskFailure error code and whether the state
machine may retry it on another host. `classify` is the one place exceptions are sorted."""

from __future__ import annotations

import enum
from typing import ClassVar, Final

SCRIPT_FAILED: Final = "RSQL.ScriptFailed"
SCRIPT_TIMEOUT: Final = "RSQL.ScriptTimeout"
SCRIPT_NOT_FOUND: Final = "RSQL.ScriptNotFound"
INVALID_INPUT: Final = "RSQL.InvalidInput"
INVALID_SCRIPT: Final = "RSQL.InvalidScript"
NOT_CONFIGURED: Final = "Agent.NotConfigured"
SHUTTING_DOWN: Final = "Agent.ShuttingDown"
INTERNAL_ERROR: Final = "Agent.InternalError"

# SendTaskFailure limits: error <= 256 chars, cause <= 32768 chars.
MAX_ERROR_CHARS: Final = 256
MAX_CAUSE_CHARS: Final = 32768


class JobError(Exception):
    """A job ended without success; `code` goes to SendTaskFailure as `error`."""

    code: ClassVar[str] = INTERNAL_ERROR
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, output_tail: str = "", exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.output_tail = output_tail
        self.exit_code = exit_code

    @property
    def cause(self) -> str:
        """A short human sentence plus the last lines of output, within the API's limit."""
        text = self.message
        if self.output_tail:
            text = f"{text}\nLast lines of output:\n{self.output_tail}"
        if len(text) > MAX_CAUSE_CHARS:
            # Keep the sentence and the newest output: the end of a log says why it failed.
            keep = MAX_CAUSE_CHARS - len(self.message) - 8
            text = f"{self.message}\n...\n{text[-keep:]}"
        return text


class ScriptFailed(JobError):
    code = SCRIPT_FAILED


class ScriptTimeout(JobError):
    code = SCRIPT_TIMEOUT


class ScriptNotFound(JobError):
    code = SCRIPT_NOT_FOUND


class InvalidInput(JobError):
    code = INVALID_INPUT


class InvalidScript(JobError):
    """The script cannot run as it is (Windows line endings with normalising off, a `.sql` job
    with an unknown `${NAME}`): nothing of it ran."""

    code = INVALID_SCRIPT


class NotConfigured(JobError):
    """This host lacks a setting the job needs (no secret for `legacy_args`, no RSQL client
    for a `.sql` job)."""

    code = NOT_CONFIGURED


class ShuttingDown(JobError):
    code = SHUTTING_DOWN
    retryable = True


class TaskGone(Exception):
    """The service says the task token is closed (TaskTimedOut / TaskDoesNotExist): the job must
    stop and nothing more may be reported for it."""


class StaleAttempt(TaskGone):
    """A newer attempt of the job holds its audit row: the service has retried the task, so
    this attempt's token is closed even if no call has said so yet."""


class CancelReason(enum.Enum):
    """Why the agent stopped a running job before it ended; the completion code reads it."""

    # The service closed the token: report nothing, the state machine has moved on.
    TASK_GONE = "the service closed the task (TaskTimedOut or TaskDoesNotExist)"
    # The host drains: fail back with Agent.ShuttingDown so another host takes the job.
    SHUTTING_DOWN = "the agent is shutting down"
    # No heartbeat got through for nearly HeartbeatSeconds: the service times the task out and
    # retries it elsewhere, so the script must not run on here. Nothing to report.
    LOST_CONTACT = "no heartbeat reached the service for too long"


def classify(exc: BaseException) -> JobError:
    """Sort any exception raised while handling a task into a JobError to report."""
    if isinstance(exc, JobError):
        return exc
    return JobError(f"Internal agent error: {type(exc).__name__}: {exc}")
