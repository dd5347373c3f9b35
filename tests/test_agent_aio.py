"""The child watcher: asyncio learns of a child's exit without a thread per child."""

from __future__ import annotations

import asyncio
import sys
import threading

from agent import aio


def test_children_are_reaped_without_a_thread_each() -> None:
    installed = aio.use_pidfd_child_watcher()
    # 3.11 needs the agent's watcher; 3.12+ uses pidfds by default and is left alone.
    assert installed is (sys.version_info < (3, 12))
    assert aio.use_pidfd_child_watcher() is installed  # idempotent

    async def run_children() -> tuple[list[int], int]:
        before = threading.active_count()
        children = [
            await asyncio.create_subprocess_exec("/bin/sh", "-c", f"exit {n}") for n in range(8)
        ]
        threads_while_running = threading.active_count() - before
        return [await child.wait() for child in children], threads_while_running

    codes, extra_threads = asyncio.run(run_children())
    assert codes == list(range(8))
    assert extra_threads == 0
    # Any loop, in any thread, can start and reap children through the same watcher.
    result: list[list[int]] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(run_children())[0]))
    thread.start()
    thread.join(30)
    assert result == [list(range(8))]
