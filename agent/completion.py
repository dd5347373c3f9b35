"""Reporting a task's end: SendTaskSuccess or SendTaskFailure, retried until delivered.

A completion is in the journal before it is sent (see `agent.report`) and is retried with
backoff for as long as the agent lives, however long the endpoint is away; if the agent stops
first, the next start sends it. TaskTimedOut / TaskDoesNotExist mean the state machine has
already moved on (timed out, stopped, retried elsewhere): logged, never retried. Any other
final answer (a malformed request) cannot get better by retrying: logged as an error.
"""

from __future__ import annotations

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent import errors
from agent.aws import FOREVER, Aws, error_code
from agent.journal import Completion
from agent.logs import token_id

log = structlog.get_logger(__name__)


class Completer:
    """Sends completions through the AWS layer."""

    def __init__(self, aws: Aws) -> None:
        self._aws = aws

    async def send(self, token: str, completion: Completion) -> bool:
        """Report `completion` for `token`; True once the service acknowledged it, False
        when it never will (the task is gone, or the request was refused)."""
        try:
            await self._call(token, completion)
        except errors.TaskGone as gone:
            log.warning("completion_task_gone", token_id=token_id(token), reason=str(gone))
            return False
        except (ClientError, BotoCoreError) as exc:
            log.error("completion_rejected", token_id=token_id(token), error=error_code(exc))
            return False
        return True

    async def _call(self, token: str, completion: Completion) -> None:
        if completion.kind == "success":
            await self._aws.call(
                self._aws.sfn.send_task_success,
                deadline_s=FOREVER,
                taskToken=token,
                output=completion.output or "{}",
            )
        else:
            await self._aws.call(
                self._aws.sfn.send_task_failure,
                deadline_s=FOREVER,
                taskToken=token,
                error=completion.error or errors.INTERNAL_ERROR,
                cause=completion.cause or "",
            )
