"""Heartbeats for a running job.

One loop per job sends SendTaskHeartbeat every `interval` (at most a third of the task's
HeartbeatSeconds, at most `heartbeat_interval_s`), one call at a time: a slow call delays the
next instead of stacking them, so heartbeats coalesce. An answer that the task is gone
(TaskTimedOut / TaskDoesNotExist) cancels the job: nobody is waiting for its result any more.
Any other failure is logged and the next beat tries again.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent import errors
from agent.aws import Aws, error_code

if TYPE_CHECKING:
    from agent.job import RunningJob

log = structlog.get_logger(__name__)


def heartbeat_interval_s(setting_s: float, heartbeat_seconds: float | None) -> float:
    """At most a third of the task's HeartbeatSeconds, so two beats may fail in a row."""
    if heartbeat_seconds is None:
        return setting_s
    return min(setting_s, heartbeat_seconds / 3)


async def keep_alive(aws: Aws, job: RunningJob, interval_s: float) -> None:
    """Beat until cancelled, or until the service says the task is gone."""
    next_beat = time.monotonic() + interval_s
    while True:
        await asyncio.sleep(max(0.0, next_beat - time.monotonic()))
        next_beat = time.monotonic() + interval_s
        try:
            # A beat that cannot get through within one interval is overtaken by the next.
            await aws.call(aws.sfn.send_task_heartbeat, deadline_s=interval_s, taskToken=job.token)
        except errors.TaskGone as gone:
            job.cancel(errors.CancelReason.TASK_GONE, detail=str(gone))
            return
        except (ClientError, BotoCoreError) as exc:
            log.warning("heartbeat_failed", error=error_code(exc))
