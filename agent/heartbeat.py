"""Heartbeats for a running job, and the fence that stops a script cut off from the service.

One loop per job sends SendTaskHeartbeat every `interval` (at most a third of the task's
HeartbeatSeconds, at most `heartbeat_interval_s`), one call at a time: a slow call delays the
next instead of stacking them, so heartbeats coalesce. An answer that the task is gone
(TaskTimedOut / TaskDoesNotExist) cancels the job: nobody is waiting for its result any more.
Any other failure is retried at the next beat (the AWS layer's `Outage` says so, once a minute).

The fence: when no heartbeat has got through for `fence_after_s` (HeartbeatSeconds less the
kill grace and a margin), the service is about to time the task out and retry it on another
host, so the job is cancelled (`LOST_CONTACT`): its script is stopped before the retry can
start, and nothing is reported (the service times the task out whatever we say). Without it a
host cut off from the network would run the job on while another host runs it too. The watch
runs beside the calls, so a call hanging on a dead connection cannot delay it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent import errors
from agent.aio import cancel_and_wait
from agent.aws import Aws, error_code

if TYPE_CHECKING:
    from agent.job import RunningJob

log = structlog.get_logger(__name__)

# Between the fence stopping a script and the earliest moment the service can time its task out.
FENCE_MARGIN_S: Final = 1.0


def heartbeat_interval_s(setting_s: float, heartbeat_seconds: float | None) -> float:
    """At most a third of the task's HeartbeatSeconds, so two beats may fail in a row."""
    if heartbeat_seconds is None:
        return setting_s
    return min(setting_s, heartbeat_seconds / 3)


def fence_after_s(heartbeat_seconds: float | None, kill_grace_s: float) -> float | None:
    """How long without a heartbeat getting through before the script is stopped: early
    enough that it is dead (SIGTERM, then SIGKILL after the grace) before the service's
    timeout; never earlier than half of HeartbeatSeconds. None: the task has no heartbeat
    timeout, so the service never retries it behind our back."""
    if heartbeat_seconds is None:
        return None
    return max(heartbeat_seconds - kill_grace_s - FENCE_MARGIN_S, heartbeat_seconds / 2)


async def keep_alive(aws: Aws, job: RunningJob, interval_s: float, fence_s: float | None) -> None:
    """Beat until cancelled, until the service says the task is gone, or until the fence."""
    beats = asyncio.create_task(_beat(aws, job, interval_s), name="heartbeat")
    try:
        while not beats.done():
            if fence_s is None or job.script_ended:
                # Nothing to fence (any more): beat on until the report is delivered.
                await asyncio.wait({beats})
                break
            silent_s = time.monotonic() - job.last_heartbeat
            if silent_s >= fence_s:
                job.cancel(
                    errors.CancelReason.LOST_CONTACT,
                    detail=f"no heartbeat got through for {silent_s:.0f} s",
                )
                return
            await asyncio.wait({beats}, timeout=max(0.05, fence_s - silent_s))
    finally:
        await cancel_and_wait(beats)


async def _beat(aws: Aws, job: RunningJob, interval_s: float) -> None:
    next_beat = time.monotonic() + interval_s
    while True:
        await asyncio.sleep(max(0.0, next_beat - time.monotonic()))
        sent = next_beat = time.monotonic()
        next_beat += interval_s
        try:
            # A beat that cannot get through within one interval is overtaken by the next.
            await aws.call(aws.sfn.send_task_heartbeat, deadline_s=interval_s, taskToken=job.token)
        except errors.TaskGone as gone:
            job.cancel(errors.CancelReason.TASK_GONE, detail=str(gone))
            return
        except (ClientError, BotoCoreError) as exc:
            log.debug("heartbeat_failed", error=error_code(exc))
            continue
        # The service restarted its timer when it took the call, which was after `sent`.
        job.last_heartbeat = max(job.last_heartbeat, sent)
