"""systemd's notify protocol: readiness, status, watchdog and stop-time extensions.

With `Type=notify` systemd passes an AF_UNIX datagram socket in `NOTIFY_SOCKET` (a path, or an
abstract name written with a leading `@`) and, with `WatchdogSec=`, the watchdog period in
`WATCHDOG_USEC` (for the process in `WATCHDOG_PID`). A message is newline-separated
`KEY=VALUE` assignments in one datagram. That is all of sd_notify(3) the agent needs, so it is
written here rather than taken from a package (the `sdnotify` package was last released in 2017;
`systemd-python` and `cysystemd` need libsystemd to build).

`supervise(agent, notifier)` runs beside `Agent.run()` and tells systemd:

    EXTEND_TIMEOUT_USEC  every EXTEND_PERIOD_S while starting and while draining, so a long
                         journal reconcile or drain is not cut by TimeoutStartSec/TimeoutStopSec
                         (both are bounded by the agent's own deadlines)
    READY=1              once clients, journal reconcile and pollers are up
    STATUS=              `3/8 jobs running, polling`, `draining (scale-in): 2 jobs left`
    STOPPING=1           when the drain starts
    WATCHDOG=1           every half WATCHDOG_USEC, sent by a task on the agent's event loop:
                         a wedged loop stops the pings and systemd restarts the agent; a busy
                         one (many jobs, much output) still turns and keeps pinging.

Without NOTIFY_SOCKET (not under systemd, or `Type=exec`) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, MutableMapping
from typing import TYPE_CHECKING, Final

import structlog

from agent.aio import cancel_and_wait

if TYPE_CHECKING:
    from agent.app import Agent

log = structlog.get_logger(__name__)

NOTIFY_SOCKET_ENV: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV: Final = "WATCHDOG_USEC"
WATCHDOG_PID_ENV: Final = "WATCHDOG_PID"
# While starting or draining, the agent asks for this much more time every EXTEND_PERIOD_S:
# three periods, so one late message is not fatal.
EXTEND_PERIOD_S: Final = 10.0
EXTEND_USEC: Final = int(3 * EXTEND_PERIOD_S * 1_000_000)


class Notifier:
    """Sends sd_notify messages to the socket systemd named; a no-op without one."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._target: str | bytes | None = None
        if address is not None:
            try:
                self._target = _socket_address(address)
            except ValueError as exc:
                log.warning("systemd_notify_unsupported", error=str(exc))
        # sd_watchdog_enabled(3): ping at half the period systemd waits for.
        self.watchdog_interval_s = watchdog_usec / 2_000_000 if watchdog_usec else None
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Read NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID, and remove them from the
        environment (as sd_notify's unset_environment does): scripts inherit the agent's
        environment and must not speak for the service."""
        env = os.environ if environ is None else environ
        address = env.pop(NOTIFY_SOCKET_ENV, None) or None
        usec_text = env.pop(WATCHDOG_USEC_ENV, None)
        pid_text = env.pop(WATCHDOG_PID_ENV, None)
        usec: int | None = None
        if usec_text and (not pid_text or pid_text == str(os.getpid())):
            try:
                usec = int(usec_text)
            except ValueError:
                log.warning("watchdog_usec_invalid", value=usec_text[:40])
            else:
                usec = usec if usec > 0 else None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    def send(self, *assignments: str) -> bool:
        """Send one datagram of `KEY=VALUE` lines; False if it could not be sent (logged
        once: losing a status line must never stop the agent)."""
        if self._target is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # Never block the event loop: a full queue drops this message, the next one
                # (status, watchdog) carries on.
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(assignments).encode(), self._target)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("systemd_notify_failed", socket=self.address, error=str(exc))
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(address: str) -> str | bytes:
    if address.startswith("@"):
        # Linux abstract namespace: a leading NUL byte instead of the `@`.
        return b"\0" + address[1:].encode()
    if not address.startswith("/"):
        raise ValueError(f"unsupported {NOTIFY_SOCKET_ENV} {address!r} (not a path or @name)")
    return address


def status_line(agent: Agent) -> str:
    """What `systemctl status rsql-agent` shows on its Status: line."""
    running = len(agent.jobs)
    if agent.draining:
        why = f" ({agent.drain_reason})" if agent.drain_reason else ""
        return f"draining{why}: {running} job{'' if running == 1 else 's'} left"
    if not agent.ready.is_set():
        return "starting: reading the secret, settling the journal"
    return f"{running}/{agent.settings.concurrency} jobs running, polling"


async def supervise(agent: Agent, notifier: Notifier) -> None:
    """Keep systemd informed until cancelled (see the module docstring)."""
    changed = asyncio.Event()
    agent.listeners.append(changed.set)
    tasks = [asyncio.create_task(_report(agent, notifier, changed), name="systemd-status")]
    if notifier.watchdog_interval_s is not None:
        tasks.append(
            asyncio.create_task(_watchdog(notifier, notifier.watchdog_interval_s), name="watchdog")
        )
    try:
        await asyncio.gather(*tasks)
    finally:
        agent.listeners.remove(changed.set)
        for task in tasks:
            await cancel_and_wait(task)


async def _report(agent: Agent, notifier: Notifier, changed: asyncio.Event) -> None:
    ready_sent = stopping_sent = False
    last_status = ""
    while True:
        changed.clear()
        messages: list[str] = []
        if agent.draining and not stopping_sent:
            stopping_sent = True
            messages.append("STOPPING=1")
        elif agent.ready.is_set() and not ready_sent and not agent.draining:
            ready_sent = True
            messages.append("READY=1")
        status = status_line(agent)
        if status != last_status:
            last_status = status
            messages.append(f"STATUS={status}")
        starting_or_draining = agent.draining or not agent.ready.is_set()
        if starting_or_draining:
            messages.append(f"EXTEND_TIMEOUT_USEC={EXTEND_USEC}")
        if messages:
            notifier.send(*messages)
        timeout = EXTEND_PERIOD_S if starting_or_draining else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    # A task on the agent's own loop, not a thread: a thread would keep pinging for a loop
    # that no longer turns.
    while True:
        notifier.send("WATCHDOG=1")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def supervising(agent: Agent, notifier: Notifier) -> AsyncIterator[None]:
    """Run `supervise` for the body of the block; a final STATUS says the agent stopped."""
    if not notifier.enabled:
        yield
        return
    task = asyncio.create_task(supervise(agent, notifier), name="systemd")
    try:
        yield
    finally:
        await cancel_and_wait(task)
        notifier.send("STATUS=stopped")
        notifier.close()
