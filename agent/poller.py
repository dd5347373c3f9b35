"""The long-poll loops: each takes a concurrency slot, then polls the activity, then hands the
task (and the slot with it) to the agent.

The slot comes first because a task token, once received, must be handled: a host that polled
without a free slot would sit on a task another host could run. An empty poll (the service's
60 s without work) gives the slot back and polls again. Failures back off exponentially with
jitter, up to `poll_error_backoff_max_s`, so a missing activity or an unreachable endpoint
never makes the pollers spin.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent.aws import Aws, error_code

log = structlog.get_logger(__name__)

# on_task(token, input) -> True when the agent took the task and with it the slot.
TaskHandler = Callable[[str, str], bool]


class Poller:
    def __init__(
        self,
        name: str,
        aws: Aws,
        slots: asyncio.Semaphore,
        draining: asyncio.Event,
        on_task: TaskHandler,
        backoff_max_s: float,
    ) -> None:
        self.name = name
        self._aws = aws
        self._slots = slots
        self._draining = draining
        self._on_task = on_task
        self._backoff_max_s = backoff_max_s
        self.polls = 0

    async def run(self) -> None:
        """Poll until the agent drains. Cancelling it abandons an open poll."""
        failures = 0
        while not self._draining.is_set():
            await self._slots.acquire()
            took_slot = failed = False
            try:
                if self._draining.is_set():
                    return
                took_slot = await self._poll_once()
                failures = 0
            except (ClientError, BotoCoreError) as exc:
                failures += 1
                failed = True
                log.warning("poll_failed", poller=self.name, error=error_code(exc))
            finally:
                if not took_slot:
                    self._slots.release()
            if failed:
                await self._back_off(failures)

    async def _poll_once(self) -> bool:
        self.polls += 1
        response = await self._aws.get_activity_task()
        token = response.get("taskToken")
        if not token:
            return False
        return self._on_task(token, response.get("input") or "")

    async def _back_off(self, failures: int) -> None:
        delay = min(self._backoff_max_s, 0.5 * 2 ** min(failures, 16))
        with contextlib.suppress(TimeoutError):
            # Full jitter, so the pollers of many hosts do not retry in step.
            await asyncio.wait_for(self._draining.wait(), timeout=random.uniform(0, delay))
