"""The long-poll loops: each takes a concurrency slot, then polls the activity, then hands the
task (and the slot with it) to the agent.

The slot comes first because a task token, once received, must be handled: a host that polled
without a free slot would sit on a task another host could run. An empty poll (the service's
60 s without work) gives the slot back and polls again. Failures back off exponentially with
jitter, up to `poll_error_backoff_max_s`, so a missing activity or an unreachable endpoint
never makes the pollers spin.

`PollerGroup` keeps `pollers` loops polling at all times (an idle host makes that many calls a
minute) and adds one more loop each time a poll returns a task, up to `max_pollers`: while
work is queued every free slot gets a poll of its own, so a task is picked up as soon as it is
scheduled instead of waiting for one of a few pollers to come round. An added loop ends at its
first empty poll, which brings an idle host back to `pollers` calls a minute.

When the agent drains, a poller waiting for a slot stops at once, but a poll already open
stays open until it returns: the service may hand it a task at any moment, and a poll
abandoned then leaves that task waiting for its heartbeat timeout. What it brings is failed
back with Agent.ShuttingDown at once (the agent's `on_task` does that while draining).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent.aio import cancel_and_wait
from agent.aws import Aws, error_code, is_transient

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
        *,
        until_idle: bool = False,
    ) -> None:
        self.name = name
        self._aws = aws
        self._slots = slots
        self._draining = draining
        self._on_task = on_task
        self._backoff_max_s = backoff_max_s
        self._until_idle = until_idle
        self.polls = 0

    async def run(self) -> None:
        """Poll until the agent drains (an open poll is finished first), or, for an added
        poller, until a poll comes back empty or fails. Cancelling it abandons an open poll."""
        failures = 0
        while not self._draining.is_set():
            if not await self._take_slot():
                return
            took_slot = failed = False
            try:
                took_slot = await self._poll_once()
                failures = 0
            except (ClientError, BotoCoreError) as exc:
                failures += 1
                failed = True
                # Transient failures are reported by the AWS layer's Outage, once a minute.
                level = log.debug if is_transient(exc) else log.warning
                level("poll_failed", poller=self.name, error=error_code(exc))
            finally:
                if not took_slot:
                    self._slots.release()
            if self._until_idle and not took_slot:
                return
            if failed:
                await self._back_off(failures)

    async def _take_slot(self) -> bool:
        """Wait for a free slot; False (and no slot) once the agent drains."""
        if self._draining.is_set():
            return False
        slot = asyncio.ensure_future(self._slots.acquire())
        drain = asyncio.ensure_future(self._draining.wait())
        try:
            await asyncio.wait({slot, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(drain)
            if not slot.done():
                await cancel_and_wait(slot)
        if slot.cancelled():
            return False
        if self._draining.is_set():
            self._slots.release()
            return False
        return True

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


class PollerGroup:
    """`pollers` loops that always poll, and up to `max_pollers` in all while tasks keep
    coming (see the module docstring). Run it as one task; cancelling it ends every loop."""

    def __init__(
        self,
        aws: Aws,
        slots: asyncio.Semaphore,
        draining: asyncio.Event,
        on_task: TaskHandler,
        backoff_max_s: float,
        *,
        pollers: int,
        max_pollers: int,
    ) -> None:
        self._aws = aws
        self._slots = slots
        self._draining = draining
        self._on_task = on_task
        self._backoff_max_s = backoff_max_s
        self._base = pollers
        self._most = max(pollers, max_pollers)
        self._running: dict[asyncio.Task[None], Poller] = {}
        self._polls_of_ended = 0
        self._added = 0
        self.most_loops = 0  # the most loops ever polling at once

    @property
    def loops(self) -> int:
        """Poll loops running now."""
        return len(self._running)

    @property
    def polls(self) -> int:
        """GetActivityTask calls made so far."""
        return self._polls_of_ended + sum(poller.polls for poller in self._running.values())

    async def run(self) -> None:
        """Poll until the agent drains and every open poll has returned; on cancel, every
        loop is cancelled (abandoning its poll) and awaited."""
        base = [self._start(f"poller-{number}", until_idle=False) for number in range(self._base)]
        try:
            # A loop that crashed is logged (see _ended); the others go on.
            await asyncio.gather(*base, return_exceptions=True)
            # Draining: added loops end once their open poll has returned.
            while self._running:
                await asyncio.gather(*list(self._running), return_exceptions=True)
        finally:
            tasks = list(self._running)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, name: str, *, until_idle: bool) -> asyncio.Task[None]:
        poller = Poller(
            name,
            self._aws,
            self._slots,
            self._draining,
            self._took,
            self._backoff_max_s,
            until_idle=until_idle,
        )
        task = asyncio.create_task(poller.run(), name=name)
        self._running[task] = poller
        self.most_loops = max(self.most_loops, len(self._running))
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        poller = self._running.pop(task, None)
        if poller is not None:
            self._polls_of_ended += poller.polls
        if not task.cancelled() and task.exception() is not None:
            log.error("poller_crashed", error=repr(task.exception()))

    def _took(self, token: str, raw_input: str) -> bool:
        took = self._on_task(token, raw_input)
        # A task came: more may be queued behind it, so give the next free slot a poll too.
        if took and len(self._running) < self._most and not self._draining.is_set():
            self._added += 1
            self._start(f"poller-extra-{self._added}", until_idle=True)
        return took
