"""The activity hub: activity task queues and the state of every task token, shared by all
executions of the emulator; the bridge routes moto's activity calls here."""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Final

from moto.core.exceptions import AWSError

# Closed tokens remembered so late calls answer TaskTimedOut; older ones, like tokens never
# issued, get moto's answer: InvalidToken (HTTP 400).
MAX_CLOSED_TOKENS: Final = 100_000


class TaskTimedOut(AWSError):
    TYPE = "TaskTimedOut"
    STATUS = 400


@dataclass
class Task:
    """One scheduled activity task, from the Task state's scheduling to its end."""

    token: str
    activity_arn: str
    task_input: str
    execution_arn: str
    endpoint: Any  # moto's ActivityCallbackEndpoint: the interpreter thread waits on it
    env: Any  # the interpreter frame the Task state runs in; not running = the state ended
    closed: bool = False


class ActivityHub:
    """Activity task queues and the state of every open task token, shared by all executions.

    One condition guards everything: the emulator serves a handful of pollers, and one lock
    keeps "is this token still open" and "hand it out" atomic.
    """

    def __init__(self, poll_wait_s: float) -> None:
        self.poll_wait_s = poll_wait_s
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Task]] = {}
        self._open: dict[str, Task] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._executions: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._stopping = False

    # Interpreter side.

    def register_execution(self, execution: Any) -> None:
        with self._cond:
            self._executions[execution.exec_arn] = execution

    def schedule(self, task: Task) -> None:
        with self._cond:
            self._open[task.token] = task
            self._queues.setdefault(task.activity_arn, deque()).append(task)
            self._cond.notify_all()

    def close(self, token: str) -> None:
        """The Task state that owns `token` is over: late calls on it answer TaskTimedOut."""
        with self._cond:
            self._close_locked(token)

    def close_execution(self, execution_arn: str) -> None:
        """The execution ended or was stopped: close its tokens and wake their waiting threads."""
        with self._cond:
            ended = [t for t in self._open.values() if t.execution_arn == execution_arn]
            for task in ended:
                self._close_locked(task.token)
                wake(task.endpoint)
            # Drop them from the queues now: nobody may poll their activity again.
            for activity_arn in {t.activity_arn for t in ended}:
                queue = self._queues[activity_arn]
                self._queues[activity_arn] = deque(t for t in queue if not t.closed)

    # API side.

    def take(self, activity_arn: str, worker_name: str | None) -> Task | None:
        """Long-poll one live task of `activity_arn`; None after `poll_wait_s` without one."""
        deadline = time.monotonic() + self.poll_wait_s
        with self._cond:
            while True:
                queue = self._queues.get(activity_arn)
                while queue:
                    task = queue.popleft()
                    if self._is_live(task):
                        task.endpoint.notify_activity_task_start(worker_name)
                        return task
                    # A dead token must never reach a worker: the work would run twice.
                    self._close_locked(task.token)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    return None
                self._cond.wait(remaining)

    def complete(self, token: str, outcome: Any) -> None:
        """SendTaskSuccess / SendTaskFailure: hand the outcome to the waiting Task state."""
        with self._cond:
            task = self._live_or_raise(token)
            task.endpoint.notify(outcome)
            self._close_locked(token)

    def heartbeat(self, token: str) -> None:
        with self._cond:
            task = self._live_or_raise(token)
            # False when the state has no HeartbeatSeconds: AWS accepts those heartbeats too.
            task.endpoint.notify_heartbeat()

    def knows(self, token: str) -> bool:
        """Whether the token is an activity token of this hub (others are callback tokens)."""
        with self._cond:
            return token in self._open or token in self._closed

    def stop(self) -> None:
        """Server shutdown: open long polls return empty at once."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # Internals, called with the lock held.

    def _is_live(self, task: Task) -> bool:
        if task.closed or not task.env.is_running():
            return False
        if task.endpoint.get_outcome() is not None or task.endpoint.consumer_error is not None:
            return False
        execution = self._executions.get(task.execution_arn)
        return execution is not None and execution_status(execution) == "RUNNING"

    def _live_or_raise(self, token: str) -> Task:
        task = self._open.get(token)
        if task is not None and self._is_live(task):
            return task
        # Only tokens the hub knows come here (see knows()): this one is over.
        self._close_locked(token)
        raise TaskTimedOut("Task Timed Out: 'Provided task does not exist anymore'")

    def _close_locked(self, token: str) -> None:
        task = self._open.pop(token, None)
        if task is not None:
            task.closed = True
        self._closed[token] = None
        self._closed.move_to_end(token)
        while len(self._closed) > MAX_CLOSED_TOKENS:
            self._closed.popitem(last=False)


def execution_status(execution: Any) -> str:
    status = execution.exec_status
    return str(getattr(status, "value", status))


def wake(endpoint: Any) -> None:
    """Release an interpreter thread blocked on a task so it ends now, not at its timeout."""
    endpoint.interrupt_all()
    # Not yet taken by a worker: it waits for the "started" event; the outcome stays None.
    endpoint.get_activity_task_start_endpoint()._next_activity_task_start_event.set()
