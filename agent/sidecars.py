"""Tasks that run beside the pollers until the drain has ended: the scale-in and Spot watcher,
the metrics publisher, housekeeping. After the drain they stop, the last metrics are published,
then the Auto Scaling lifecycle action is completed (the instance goes right after)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from agent import lifecycle
from agent.housekeeping import Housekeeper
from agent.metrics import MetricsPublisher

if TYPE_CHECKING:
    from agent.app import Agent
    from agent.job import JobContext

log = structlog.get_logger(__name__)


@dataclass
class Sidecars:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    watcher: lifecycle.LifecycleWatcher | None = None
    publisher: MetricsPublisher | None = None

    @classmethod
    def start(cls, agent: Agent, ctx: JobContext) -> Sidecars:
        s = agent.settings
        sidecars = cls(
            watcher=lifecycle.make_watcher(s, ctx.aws, ctx.instance_id, agent.request_stop)
        )
        if sidecars.watcher is not None:
            sidecars.tasks.append(asyncio.create_task(sidecars.watcher.run(), name="lifecycle"))
        if s.metrics_enabled:
            sidecars.publisher = MetricsPublisher(s, ctx.aws, agent.metrics, ctx.instance_id)
            sidecars.tasks.append(asyncio.create_task(sidecars.publisher.run(), name="metrics"))
        if s.housekeeping_enabled:
            housekeeper = Housekeeper(s, agent.files_in_use)
            sidecars.tasks.append(asyncio.create_task(housekeeper.run(), name="housekeeping"))
        for task in sidecars.tasks:
            task.add_done_callback(_sidecar_done)
        return sidecars

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.publisher is not None:
            await self.publisher.flush()
        if self.watcher is not None:
            await self.watcher.finish()


def _sidecar_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sidecar_crashed", sidecar=task.get_name(), error=repr(task.exception()))
