"""The bridge's patches to moto's Step Functions interpreter (`moto/stepfunctions/parser/`), one
function per gap; the numbers are those of the list in `cloud/emulator/bridge.py`.

Each function wraps one or two moto methods and keeps the original for the cases it does not
change. They are applied once, by `bridge.apply()`, before the server serves a request.
"""

from __future__ import annotations

import datetime
import threading
import types
from typing import Any

from moto.stepfunctions.parser.api import ActivityDoesNotExist
from moto.stepfunctions.parser.asl.component.state import state as state_module
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
    iteration_worker,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
    state_task_activitiy,
)
from moto.stepfunctions.parser.asl.eval import environment
from moto.stepfunctions.parser.asl.eval.callback import callback
from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped
from moto.stepfunctions.parser.backend import execution as backend_execution
from moto.stepfunctions.parser.models import stepfunctions_parser_backends
from moto.stepfunctions.parser.utils import TMP_THREADS

from agent.schema import iso_utc_ms
from cloud.emulator.hub import ActivityHub, Task, execution_status

# The frame of the Task state being evaluated on this interpreter thread: set by the state's
# evaluation, read when it schedules its activity task (see `schedule_activity_tasks`).
_tls = threading.local()


class _ActivityStore:
    """Stands in for the empty dict moto gives each execution: the backend's real activities."""

    def __init__(self, account_id: str, region_name: str) -> None:
        self._account_id = account_id
        self._region_name = region_name

    def get(self, activity_arn: str) -> bool | None:
        backend = stepfunctions_parser_backends[self._account_id][self._region_name]
        return True if activity_arn in backend.activities else None


def executions_see_activities(hub: ActivityHub) -> None:
    """(1) Every execution sees the backend's activities, not an empty dict; the hub knows it."""
    execution_cls: Any = backend_execution.Execution
    original_init = execution_cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._activity_store = _ActivityStore(self.account_id, self.region_name)
        hub.register_execution(self)

    execution_cls.__init__ = init


def prune_finished_threads() -> None:
    """(9) moto appends every thread it starts to TMP_THREADS and never removes one: each new
    execution drops the finished ones."""
    execution_cls: Any = backend_execution.Execution
    original_init = execution_cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        TMP_THREADS[:] = [t for t in TMP_THREADS if t.is_alive()]

    execution_cls.__init__ = init


def context_object_timestamps() -> None:
    """(11) `$$.Execution.StartTime` and `$$.State.EnteredTime` as AWS writes them."""
    execution_cls: Any = backend_execution.Execution
    original_start_details = execution_cls.get_start_execution_details

    def get_start_execution_details(self: Any) -> Any:
        details = original_start_details(self)
        details.start_time = iso_utc_ms(self.start_date)
        return details

    execution_cls.get_start_execution_details = get_start_execution_details
    state_mod: Any = state_module
    state_mod.datetime = types.SimpleNamespace(datetime=_AwsDatetime, timezone=datetime.timezone)


class _AwsDatetime(datetime.datetime):
    """What moto's state module gets as `datetime.datetime`: its one use is
    `now(tz=utc).isoformat()` for `$$.State.EnteredTime`."""

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return iso_utc_ms(self)


def schedule_activity_tasks(hub: ActivityHub) -> None:
    """(1) Activity tasks go to the hub's queues. moto queues a task before its endpoint exists
    (a fast poller would find no endpoint) and does not know the frame the state runs in (the
    hub needs it to know when the token dies): replaced whole."""
    pool_cls: Any = callback.CallbackPoolManager
    original_add_activity_task = pool_cls.add_activity_task

    def add_activity_task(
        self: Any, callback_id: str, activity_arn: str, activity_input: str
    ) -> Any:
        env = getattr(_tls, "env", None)
        if not isinstance(self._activity_store, _ActivityStore) or env is None:
            return original_add_activity_task(self, callback_id, activity_arn, activity_input)
        if self._activity_store.get(activity_arn) is None:
            raise ActivityDoesNotExist(f"Activity Does Not Exist: '{activity_arn}'")
        endpoint = callback.ActivityCallbackEndpoint(
            callback_id=callback_id, activity_input=activity_input
        )
        self._pool[callback_id] = endpoint
        execution_arn = env.states.context_object.context_object_data["Execution"]["Id"]
        hub.schedule(Task(callback_id, activity_arn, activity_input, execution_arn, endpoint, env))
        return endpoint

    pool_cls.add_activity_task = add_activity_task


def close_tokens_with_their_state(hub: ActivityHub) -> None:
    """(2) The Task state's evaluation tells the hub which frame owns the token, and closes the
    token when the state is over, however it ended (output, failure, timeout, stop)."""
    task_cls: Any = state_task_activitiy.StateTaskActivity
    original_eval_execution = task_cls._eval_execution

    def eval_execution(self: Any, env: Any) -> None:
        context = env.states.context_object.context_object_data
        inherited = context.get("Task", {}).get("Token")
        _tls.env = env
        try:
            original_eval_execution(self, env)
        finally:
            _tls.env = None
            token = context.get("Task", {}).get("Token")
            if token and token != inherited:  # not when it failed before making one
                hub.close(token)

    task_cls._eval_execution = eval_execution


def untaken_tasks_time_out() -> None:
    """A task never taken reads `_outcome`, which moto only sets when a worker takes it: the
    AttributeError became States.Runtime instead of States.Timeout."""
    callback.ActivityTaskStartEndpoint._outcome = None


def replay_early_outcomes() -> None:
    """A worker that completes a task before the interpreter thread set up its heartbeat wait
    would be missed, and the task would time out despite its result: replay the outcome."""
    endpoint_cls: Any = callback.CallbackEndpoint
    original_setup_heartbeat = endpoint_cls.setup_heartbeat_endpoint

    def setup_heartbeat_endpoint(self: Any, heartbeat_seconds: int) -> Any:
        heartbeat_endpoint = original_setup_heartbeat(self, heartbeat_seconds)
        if self.get_outcome() is not None:
            heartbeat_endpoint.notify()
        return heartbeat_endpoint

    endpoint_cls.setup_heartbeat_endpoint = setup_heartbeat_endpoint


def stopped_executions_stay_aborted(hub: ActivityHub) -> None:
    """(3)(5) Once stopped, a state failing on its way out (the woken task) must not turn the
    execution's end into ExecutionFailed; when an execution ends, its open tokens close."""
    env_cls: Any = environment.Environment
    original_set_error = env_cls.set_error

    def set_error(self: Any, error: Any) -> None:
        if isinstance(self._program_state, ProgramStopped):
            return
        original_set_error(self, error)

    env_cls.set_error = set_error

    comm_cls: Any = backend_execution.BaseExecutionWorkerCommunication
    original_reflect = comm_cls._reflect_execution_status

    def reflect_execution_status(self: Any) -> None:
        if execution_status(self.execution) != "ABORTED":
            original_reflect(self)
        hub.close_execution(self.execution.exec_arn)

    comm_cls._reflect_execution_status = reflect_execution_status


def map_workers_loop() -> None:
    """(17) A Map worker takes its next item by calling itself: past about 1,000 items per
    worker (a sequential stage of 1,000 jobs) the thread dies of RecursionError and the
    execution hangs. The same steps, in a loop."""
    worker_cls: Any = iteration_worker.IterationWorker

    def eval_pool(self: Any, job: Any, worker_frame: Any) -> None:
        while job is not None:
            job_frame = worker_frame.open_inner_frame()
            self._eval_job(env=job_frame, job=job)
            worker_frame.close_frame(job_frame)
            if isinstance(job.job_output, Exception) or self.stopped():
                break  # the Map fails, or was stopped: this worker takes no more items
            next_job = self._job_pool.next_job()
            if next_job is None:
                # The last item's events are what the Map's next events follow.
                worker_frame.event_history_context.source_event_id = (
                    job_frame.event_history_context.last_published_event_id
                )
                break
            self._job_pool.close_job(job)
            job = next_job
        # The frame closes before the job: the Map waits for its jobs, not for its workers.
        self._env.close_frame(worker_frame)
        if job is not None:
            self._job_pool.close_job(job)

    worker_cls._eval_pool = eval_pool
