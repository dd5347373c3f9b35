"""Reporting a task's end: SendTaskSuccess or SendTaskFailure, retried, never lost.

The completion goes into the journal before it is sent and leaves it once the service has
acknowledged it, so a completion that could not be delivered before the agent stopped is sent
again at the next start. TaskTimedOut / TaskDoesNotExist mean the state machine has already
moved on (timed out, stopped, retried elsewhere): logged, never retried.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent import errors
from agent.aws import Aws, error_code, is_transient
from agent.journal import Completion, Journal
from agent.logs import token_id

log = structlog.get_logger(__name__)


def success(output: dict[str, Any]) -> Completion:
    return Completion(kind="success", output=json.dumps(output, separators=(",", ":")))


def failure(error: errors.JobError) -> Completion:
    return Completion(kind="failure", error=error.code[: errors.MAX_ERROR_CHARS], cause=error.cause)


class Completer:
    """Sends completions through the AWS layer with the journal as their spool."""

    def __init__(self, aws: Aws, journal: Journal, deadline_s: float) -> None:
        self._aws = aws
        self._journal = journal
        self._deadline_s = deadline_s

    async def send(self, token: str, completion: Completion) -> bool:
        """Report `completion` for `token`; True once the service acknowledged it."""
        self._journal.update(token, completion=completion)
        try:
            await self._call(token, completion)
        except errors.TaskGone as gone:
            log.warning("completion_task_gone", token_id=token_id(token), reason=str(gone))
        except (ClientError, BotoCoreError) as exc:
            if is_transient(exc):
                # Out of time for now: the journal keeps it for the next start.
                log.error("completion_deferred", token_id=token_id(token), error=error_code(exc))
                return False
            log.error("completion_rejected", token_id=token_id(token), error=error_code(exc))
        else:
            self._journal.remove(token)
            return True
        self._journal.remove(token)
        return False

    async def _call(self, token: str, completion: Completion) -> None:
        if completion.kind == "success":
            await self._aws.call(
                self._aws.sfn.send_task_success,
                deadline_s=self._deadline_s,
                taskToken=token,
                output=completion.output or "{}",
            )
        else:
            await self._aws.call(
                self._aws.sfn.send_task_failure,
                deadline_s=self._deadline_s,
                taskToken=token,
                error=completion.error or errors.INTERNAL_ERROR,
                cause=completion.cause or "",
            )
