"""Small asyncio helpers the agent's modules share."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended.

    The CancelledError that the cancelled task ends with is expected and dropped; a
    cancellation of the *caller* while it waits is not, and propagates. (A bare
    `with suppress(CancelledError): await task` would swallow both.)
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class Interrupted(Exception):
    """`unless` gave up on its call: the event was set first."""


async def unless(event: asyncio.Event, call: Coroutine[Any, Any, T]) -> T:
    """Await `call` unless `event` is set first; then cancel it and raise Interrupted. If the
    caller is cancelled meanwhile, `call` is cancelled too (nothing is left running)."""
    work = asyncio.ensure_future(call)
    stop = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stop, work):
            if not task.done():
                task.cancel()
        await asyncio.gather(stop, work, return_exceptions=True)
    if work.cancelled():
        raise Interrupted
    return work.result()


def use_pidfd_child_watcher() -> bool:
    """On Python 3.11, have asyncio learn of child exits through pidfds (Linux 5.3+) instead of
    its default ThreadedChildWatcher, which starts a thread per child to block in waitpid().
    Python 3.12+ already does this by default, so there nothing is changed (and the child
    watcher API, deprecated there, is not touched). Returns True when installed.

    Process-wide and idempotent; the watcher works for any running loop in any thread."""
    if sys.version_info >= (3, 12) or not _pidfd_works():
        return False
    policy = asyncio.get_event_loop_policy()
    if not isinstance(getattr(policy, "_watcher", None), _PidfdWatcher):
        policy.set_child_watcher(_PidfdWatcher())
    return True


def _pidfd_works() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid(), 0))
    except (AttributeError, OSError):  # no pidfd_open, or blocked by a seccomp policy
        return False
    return True


if sys.version_info < (3, 12):
    # Defined on 3.11 only: subclassing AbstractChildWatcher warns from 3.12, which removed
    # the need, and the class is gone in 3.14.
    class _PidfdWatcher(asyncio.AbstractChildWatcher):
        """Python 3.12's loop-agnostic PidfdChildWatcher, for 3.11 (whose own is bound to one
        loop): the child's pidfd is watched by the loop that started the child."""

        def add_child_handler(  # type: ignore[override]
            self, pid: int, callback: Callable[..., Any], *args: Any
        ) -> None:
            loop = asyncio.get_running_loop()
            pidfd = os.pidfd_open(pid)
            loop._add_reader(pidfd, self._reap, pid, pidfd, callback, args)  # type: ignore[attr-defined]

        def _reap(self, pid: int, pidfd: int, callback: Callable[..., Any], args: Any) -> None:
            asyncio.get_running_loop()._remove_reader(pidfd)  # type: ignore[attr-defined]
            try:
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # reaped elsewhere: the status is lost
                code = 255
            os.close(pidfd)
            callback(pid, code, *args)

        def remove_child_handler(self, pid: int) -> bool:
            return True  # asyncio never calls it

        def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
            pass

        def close(self) -> None:
            pass

        def is_active(self) -> bool:
            return True

        def __enter__(self) -> _PidfdWatcher:
            return self

        def __exit__(self, *exc: object) -> None:
            pass
