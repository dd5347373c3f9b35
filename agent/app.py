"""The agent: `Agent.run()` = start up, poll until told to stop, drain.

No signal handling here (the CLI owns signals, tests embed the agent): `request_stop()` asks
for a drain, `force_stop()` cuts it short. `running(settings)` runs an agent for the body of
an `async with`, for tests and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from agent import __version__, aio, errors, logs, reconcile, schema
from agent.aio import cancel_and_wait
from agent.audit import JobAuditTable
from agent.aws import Aws
from agent.completion import Completer
from agent.errors import CancelReason
from agent.instance import resolve_instance_id
from agent.job import JobContext, RunningJob, execute
from agent.journal import Journal
from agent.logship import LogShipping
from agent.metrics import JobMetrics
from agent.outcome import failure
from agent.poller import PollerGroup
from agent.reaper import Reaper
from agent.report import Reporting, deliver_owed
from agent.secret import load_connection_env
from agent.settings import Settings
from agent.sidecars import Sidecars

log = structlog.get_logger(__name__)

# After the drain deadline, cancelled jobs get the kill grace, the log flush wait and this
# long to be killed and failed back; what is still unreported then stays in the journal.
CANCEL_REPORT_TIMEOUT_S: Final = 15.0

Tasks = Callable[[], set[asyncio.Task[None]]]


class StartupError(Exception):
    """The agent cannot start (secret unreadable, state directory not writable, ...)."""


class Agent:
    """One host's worker. Build with settings, then `await run()` in a running loop."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        # Scripts inherit this environment (the agent's own, as under any service manager).
        self._env = dict(os.environ if env is None else env)
        self.jobs: dict[str, RunningJob] = {}
        # Tokens of the jobs holding a concurrency slot: until their script is over.
        self._slot_holders: set[str] = set()
        self.ready = asyncio.Event()
        self.max_running = 0
        self.jobs_started = 0
        # Called (in the loop) whenever jobs start or end, the agent becomes ready or drains:
        # the systemd status, for one.
        self.listeners: list[Callable[[], None]] = []
        self.drain_reason: str | None = None
        self.metrics = JobMetrics(settings.concurrency)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._draining = asyncio.Event()
        # Monotonic time the drain ends; a later stop request may move it earlier. `_wake`
        # tells a waiting drain that it moved, or that force_stop() was called.
        self._drain_deadline = math.inf
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # jobs, fail-backs, a previous run's reports
        self._pollers: PollerGroup | None = None
        self._poller_tasks: list[asyncio.Task[None]] = []
        self._sidecars: Sidecars | None = None
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aws: Aws | None = None
        self._reaper: Reaper | None = None
        self._ctx: JobContext | None = None

    async def run(self) -> None:
        """Start up (settling what a previous run left), poll until told to stop, drain.
        Raises StartupError when it cannot start."""
        self._loop = asyncio.get_running_loop()
        aio.use_pidfd_child_watcher()
        try:
            self._ctx = await self._start_unless_stopped()
            if self._ctx is not None:
                self._start_pollers()
                self._sidecars = Sidecars.start(self, self._ctx)
                self.ready.set()
                self._changed()
                await self._stop.wait()
            log.info("agent_stopping", running=len(self.jobs))
        finally:
            await self._drain()
            if self._sidecars is not None:
                await self._sidecars.stop()
            calls = {}
            if self._aws is not None:
                self._aws.close()
                calls = dict(self._aws.calls)
            if self._reaper is not None:
                self._reaper.close()
            log.info("agent_stopped", api_calls=calls)

    @property
    def aws(self) -> Aws:
        """The AWS layer (after start): its clients are where call counts can be observed."""
        if self._aws is None:
            raise RuntimeError("the agent has not started")
        return self._aws

    @property
    def idle(self) -> bool:
        """Nothing but polls going on: no job, no report, no log shipping pending."""
        shipping = self._ctx.shipping.tasks if self._ctx is not None else set()
        return not (self.jobs or self._tasks or shipping)

    @property
    def polls_started(self) -> int:
        """GetActivityTask calls made so far (for tests and metrics)."""
        return self._pollers.polls if self._pollers is not None else 0

    @property
    def pollers(self) -> PollerGroup:
        """The poll loops (after start): how many run, how many ran at most."""
        if self._pollers is None:
            raise RuntimeError("the agent has not started")
        return self._pollers

    @property
    def draining(self) -> bool:
        """True from the moment the agent stops polling."""
        return self._draining.is_set()

    def request_stop(self, drain_timeout_s: float | None = None, reason: str | None = None) -> None:
        """Drain and stop: no new polls, running jobs get `drain_timeout_s` (default: the
        setting) to finish. A later request may make the drain shorter, never longer.
        `reason` (`scale-in`, `spot`) shows in the status. Thread-safe."""
        timeout_s = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self._in_loop(self._stop_within, timeout_s, reason)

    def force_stop(self) -> None:
        """Stop now: kill running jobs; what is unreported stays in the journal."""
        self._in_loop(self._stop_now)

    def files_in_use(self) -> set[Path]:
        """Files housekeeping must leave: running jobs' logs, logs still owed to CloudWatch,
        the journal's entries."""
        assert self._ctx is not None
        logs_in_use = {job.log_path for job in self.jobs.values() if job.log_path is not None}
        return logs_in_use | self._ctx.journal.held_files() | self._ctx.journal.owed_logs()

    def _stop_within(self, timeout_s: float, reason: str | None) -> None:
        deadline = time.monotonic() + timeout_s
        if deadline < self._drain_deadline:
            self._drain_deadline = deadline
            self._wake.set()
        self.drain_reason = self.drain_reason or reason
        self._stop.set()

    def _stop_now(self) -> None:
        self._stop.set()
        self._force.set()
        self._wake.set()

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        try:
            in_loop = loop is None or asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            fn(*args)
        elif loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _changed(self) -> None:
        self.metrics.set_busy(len(self._slot_holders))
        self.metrics.polling = not self.draining
        for listener in self.listeners:
            listener()

    # -- start-up ------------------------------------------------------------------------------

    async def _start_unless_stopped(self) -> JobContext | None:
        """Start up; None if a stop is requested first (start-up waits out an outage)."""
        try:
            return await aio.unless(self._stop, self._startup())
        except aio.Interrupted:
            return None

    async def _startup(self) -> JobContext:
        s = self.settings
        try:
            s.log_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            journal = Journal(s.state_dir)
        except OSError as exc:
            raise StartupError(f"cannot create the agent's directories: {exc}") from None
        # Before anything else: a previous run's scripts must not run on beside new ones.
        entries = journal.load()
        reconcile.kill_orphans(entries)
        self._reaper = Reaper()
        self._aws = aws = Aws(s)
        instance_id = await resolve_instance_id(s)
        audit = JobAuditTable(aws, s.job_audit_table, instance_id, s.worker_name)
        shipping = LogShipping(aws, journal, s.log_flush_interval_s, s.concurrency)
        reporting = Reporting(journal, audit, Completer(aws))
        ctx = JobContext(
            s, aws, audit, reporting, journal, shipping, self._reaper, self._env, {}, instance_id
        )
        # What a previous run owes goes out in the background, even before the secret is read.
        for entry in entries:
            self._spawn(reconcile.settle(ctx, entry), entry.token)
        try:
            connection_env = await load_connection_env(aws, s.secret_id)
        except Exception as exc:
            raise StartupError(str(exc)) from None
        log.info(
            "agent_started",
            version=__version__,
            activity_arn=s.activity_arn,
            instance_id=instance_id,
            worker_name=s.worker_name,
            concurrency=s.concurrency,
            pollers=s.effective_pollers,
            owed_from_previous_run=len(entries),
            reaper_pid=self._reaper.pid,
        )
        return dataclasses.replace(ctx, connection_env=connection_env)

    # -- the main loop: pollers hand tasks to jobs ---------------------------------------------

    def _start_pollers(self) -> None:
        assert self._aws is not None
        self._pollers = PollerGroup(
            self._aws,
            self._slots,
            self._draining,
            self._accept,
            self.settings.poll_error_backoff_max_s,
            pollers=self.settings.effective_pollers,
            max_pollers=self.settings.effective_max_pollers,
        )
        self._poller_tasks.append(asyncio.create_task(self._pollers.run(), name="pollers"))

    def _accept(self, token: str, raw_input: str) -> bool:
        """A poll returned a task: run it, or during a drain fail it back at once."""
        assert self._ctx is not None
        ctx = self._ctx
        ctx.journal.hold(token, raw_input)
        if self._draining.is_set():
            error = errors.ShuttingDown("The agent is shutting down; the task was not started.")
            ctx.journal.note(token, completion=failure(error))
            self._spawn(deliver_owed(ctx.reporting, token), token)
            return False
        job = RunningJob(token, raw_input, release_slot=lambda: self._release_slot(job))
        self.metrics.task_received(raw_input)
        self.jobs[token] = job
        self._slot_holders.add(token)
        self.jobs_started += 1
        self.max_running = max(self.max_running, len(self._slot_holders))
        task = self._spawn(execute(ctx, job), token)
        task.add_done_callback(lambda _: self._job_done(job))
        self._changed()
        return True

    def _release_slot(self, job: RunningJob) -> None:
        """The job's script is over (or the job is): its slot takes the next task while the
        job still reports (audit row, completion) and ships its last lines."""
        if job.token in self._slot_holders:
            self._slot_holders.discard(job.token)
            self._slots.release()
            self._changed()

    def _job_done(self, job: RunningJob) -> None:
        self.jobs.pop(job.token, None)
        self._release_slot(job)
        if job.outcome is not None:
            ran = job.outcome.exit_code is not None and job.outcome.status != schema.SKIPPED
            self.metrics.job_ended(job.outcome.status, job.outcome.duration_ms, ran)
        self._changed()

    def _spawn(self, coro: Coroutine[Any, Any, Any], token: str) -> asyncio.Task[None]:
        logs.redactor.add(token)
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, token))
        return task

    def _task_done(self, task: asyncio.Task[None], token: str) -> None:
        self._tasks.discard(task)
        logs.redactor.discard(token)
        if not task.cancelled() and task.exception() is not None:
            log.error("task_handler_crashed", error=repr(task.exception()))

    # -- the drain -------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Stop polling; polls still open stay open until they return (what they bring is
        failed back at once) and running jobs may finish, until the drain deadline; then
        cancel the jobs with a reason and give them a bounded time to report; let log
        shipping and owed reports go on until the deadline; then cancel what is left (it
        stays in the journal). force_stop() skips every wait."""
        self._draining.set()
        started = time.monotonic()
        if math.isinf(self._drain_deadline):  # the agent stops without a request
            self._drain_deadline = started + self.settings.drain_timeout_s
        self._changed()
        log.info(
            "drain_started",
            running=len(self.jobs),
            timeout_s=round(self._drain_deadline - started, 1),
            reason=self.drain_reason,
        )
        await self._wait(lambda: {*self._tasks, *self._poller_tasks}, lambda: self._drain_deadline)
        if self.jobs:
            for job in list(self.jobs.values()):
                job.cancel(CancelReason.SHUTTING_DOWN)
            s = self.settings
            report_by = time.monotonic() + s.kill_grace_s + s.log_flush_wait_s
            report_by += CANCEL_REPORT_TIMEOUT_S
            await self._wait(lambda: self._tasks, lambda: report_by)
        if self._ctx is not None:
            shipping = self._ctx.shipping
            until = max(self._drain_deadline, time.monotonic() + self.settings.log_flush_wait_s)
            await self._wait(lambda: {*self._tasks, *shipping.tasks}, lambda: until)
        await self._cancel_all()
        log.info("drain_finished", duration_ms=int((time.monotonic() - started) * 1000))

    async def _cancel_all(self) -> None:
        shipping = self._ctx.shipping.tasks if self._ctx is not None else set()
        left = [*self._tasks, *self._poller_tasks, *shipping]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    async def _wait(self, tasks: Tasks, deadline: Callable[[], float]) -> None:
        """Wait until `tasks()` (new ones may appear) are done or `deadline()` (which a stop
        request may move earlier meanwhile) passes, or until force_stop()."""
        while (pending := {t for t in tasks() if not t.done()}) and not self._force.is_set():
            remaining = deadline() - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            wake = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait(
                    {*pending, wake}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                await cancel_and_wait(wake)


@contextlib.asynccontextmanager
async def running(settings: Settings, ready_timeout_s: float = 30.0) -> AsyncIterator[Agent]:
    """Run an agent for the body of the block; on exit it drains and stops."""
    agent = Agent(settings)
    main = asyncio.create_task(agent.run(), name="agent")
    ready = asyncio.create_task(agent.ready.wait())
    await asyncio.wait({main, ready}, timeout=ready_timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        if main.done():
            main.result()  # raises why it could not start
        main.cancel()
        raise StartupError(f"the agent was not ready within {ready_timeout_s} s")
    try:
        yield agent
    finally:
        agent.request_stop()
        await main
