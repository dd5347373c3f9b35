"""Small asyncio helpers the agent's modules share."""

from __future__ import annotations

import asyncio
from typing import Any


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
