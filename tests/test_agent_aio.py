"""asyncio helpers: the child watcher (a child's exit without a thread per child), `unless`."""

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


def test_unless_gives_up_on_its_call_when_the_event_comes_first() -> None:
    async def go() -> tuple[str, bool, str]:
        stop = asyncio.Event()
        finished = asyncio.Event()

        async def slow() -> str:
            try:
                await asyncio.sleep(30)
            finally:
                finished.set()
            return "never"

        asyncio.get_running_loop().call_later(0.05, stop.set)
        try:
            await aio.unless(stop, slow())
            outcome = "returned"
        except aio.Interrupted:
            outcome = "interrupted"
        quick = await aio.unless(asyncio.Event(), asyncio.sleep(0, result="done"))
        return outcome, finished.is_set(), quick

    assert asyncio.run(go()) == ("interrupted", True, "done")


def test_unless_leaves_nothing_running_when_its_caller_is_cancelled() -> None:
    async def go() -> bool:
        cleaned_up = asyncio.Event()

        async def call() -> None:
            try:
                await asyncio.sleep(30)
            finally:
                cleaned_up.set()

        waiter = asyncio.create_task(aio.unless(asyncio.Event(), call()))
        await asyncio.sleep(0.05)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        return waiter.cancelled() and cleaned_up.is_set()

    assert asyncio.run(go())
