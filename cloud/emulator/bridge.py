"""The activity bridge: patches to moto's Step Functions execution mode for the local emulator.

moto 5.2.5 (pinned: these patches reach into its internals) can execute state machines with the
LocalStack-derived interpreter in `moto/stepfunctions/parser/`, but activity tasks, the heart of
rsql-agent, do not work there out of the box (DESIGN.md, "Facts about moto 5.2.5"). `apply()`
closes each gap, in the emulator process, before the server starts:

1. GetActivityTask is not routed, and every execution gets an empty activity store, so an
   activity Task fails with "activity does not exist". Executions here get a store backed by the
   backend's activities, tasks wait in `ActivityHub` queues, GetActivityTask long-polls them.
2. A token whose task ended (timed out, completed, execution stopped or ended) must answer
   SendTaskHeartbeat/Success/Failure with `TaskTimedOut` (HTTP 400); moto answers 200 and does
   nothing, or HTTP 500 (its TaskTimedOut cannot even be constructed).
3. StopExecution must end the execution ABORTED at once, keeping error and cause; moto leaves it
   RUNNING until the running task times out, then marks it FAILED.
4. SendTaskFailure drops `cause`.
5. GetActivityTask must skip queued tasks whose token is closed or whose execution ended.
6. GetActivityTask on an unknown activity answers `ActivityDoesNotExist` (HTTP 400) at once, as
   AWS does; a poller must back off on it.
7. autoscaling CompleteLifecycleAction is not implemented (HTTP 500): a stub answers success.
8. The interpreter's service calls go to `localhost`: pinned to 127.0.0.1 (see below).
9. moto keeps every thread it starts in a list: pruned of finished threads at each execution.
10. StartExecution without a name names the execution "None"; AWS generates a UUID.
11. `$$.Execution.StartTime` is a Python datetime in the context object (a putItem using it
    fails: "not JSON serializable") and `$$.State.EnteredTime` reads
    `2026-11-27T08:01:02.123456+00:00`; AWS gives both as `2026-11-27T08:01:02.123Z`.

Findings about the interpreter, most kept as tests in tests/test_bridge.py:
- Its own service integrations (dynamodb:getItem/putItem/updateItem with condition and update
  expressions, sns:publish) call the server over HTTP at `localhost:$MOTO_PORT`; the emulator
  sets MOTO_PORT, patch 8 pins the host to 127.0.0.1. A failed ConditionExpression reaches a
  Catch as `DynamoDB.ConditionalCheckFailedException`; a missing table as
  `DynamoDB.ResourceNotFoundException`; `States.TaskFailed` matches both in a Retry. getItem of
  a missing key returns `{}` (no `Item`), as AWS does.
- Work: Fail's ErrorPath/CausePath; States.StringToJson, States.MathAdd (nested too),
  States.Format (a null argument prints `null`) in Pass Parameters and Map ItemSelector;
  MaxConcurrencyPath (0 = unlimited); HeartbeatSecondsPath/TimeoutSecondsPath; Retry/Catch on
  custom error names; a failing Map iteration fails the Map at once.
- Trap: HeartbeatSeconds without TimeoutSeconds gets a hidden 60 s total timeout (AWS has
  none): always set TimeoutSeconds too.
- Trap: a task input that is a bare JSON string (a Map item "a.sh" with no Parameters) reaches
  the worker unquoted (`a.sh`, not `"a.sh"`): give activity Tasks object inputs.
- A stopped execution's history shows ActivityTimedOut (the woken task) before
  ExecutionAborted; its status and error/cause are AWS's.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
import types
import uuid
from typing import Any, Final

from cloud.emulator.hub import ActivityHub, Task, execution_status

MOTO_VERSION: Final = "5.2.5"
POLL_WAIT_ENV: Final = "RSQL_EMULATOR_POLL_WAIT_S"
# AWS holds an empty GetActivityTask open for 60 s.
DEFAULT_POLL_WAIT_S: Final = 60.0

_log = logging.getLogger(__name__)


class _ActivityStore:
    """Stands in for the empty dict moto gives each execution: the backend's real activities."""

    def __init__(self, account_id: str, region_name: str) -> None:
        self._account_id = account_id
        self._region_name = region_name

    def get(self, activity_arn: str) -> bool | None:
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        backend = stepfunctions_parser_backends[self._account_id][self._region_name]
        return True if activity_arn in backend.activities else None


_hub: ActivityHub | None = None
_tls = threading.local()


def apply(poll_wait_s: float | None = None) -> ActivityHub:
    """Patch moto (idempotent) and return the hub. Call before the server starts."""
    global _hub
    if _hub is not None:
        if poll_wait_s is not None:
            _hub.poll_wait_s = poll_wait_s
        return _hub
    import moto

    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"the activity bridge was written against moto {MOTO_VERSION}, found "
            f"{moto.__version__}: install moto[server]=={MOTO_VERSION}"
        )
    if poll_wait_s is None:
        poll_wait_s = float(os.environ.get(POLL_WAIT_ENV, DEFAULT_POLL_WAIT_S))
    hub = ActivityHub(poll_wait_s)
    _patch_interpreter(hub)
    _patch_backend(hub)
    _patch_responses(hub)
    _patch_service_client_host()
    _patch_autoscaling()
    _hub = hub
    return hub


def _patch_interpreter(hub: ActivityHub) -> None:
    from moto.stepfunctions.parser.api import ActivityDoesNotExist
    from moto.stepfunctions.parser.asl.component.state import state as state_module
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
        state_task_activitiy,
    )
    from moto.stepfunctions.parser.asl.eval import environment
    from moto.stepfunctions.parser.asl.eval.callback import callback
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped
    from moto.stepfunctions.parser.backend import execution as backend_execution
    from moto.stepfunctions.parser.utils import TMP_THREADS

    # (1) Every execution sees the backend's activities, not an empty dict.
    execution_cls: Any = backend_execution.Execution
    original_init = execution_cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._activity_store = _ActivityStore(self.account_id, self.region_name)
        hub.register_execution(self)
        # (9) moto appends every thread it starts to TMP_THREADS and never removes one.
        TMP_THREADS[:] = [t for t in TMP_THREADS if t.is_alive()]

    execution_cls.__init__ = init

    # (11) AWS's context object timestamps.
    original_start_details = execution_cls.get_start_execution_details

    def get_start_execution_details(self: Any) -> Any:
        details = original_start_details(self)
        details.start_time = aws_timestamp(self.start_date)
        return details

    execution_cls.get_start_execution_details = get_start_execution_details
    state_mod: Any = state_module
    state_mod.datetime = types.SimpleNamespace(datetime=_AwsDatetime, timezone=datetime.timezone)

    # (1) moto queues the task before its endpoint exists (a fast poller would find no endpoint)
    # and needs the frame the state runs in to know when the token dies: replaced whole.
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

    # The Task state's evaluation tells the hub which frame owns the token, and closes the
    # token when the state is over, however it ended (output, failure, timeout, stop).
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

    # A task never taken reads `_outcome`, which moto only sets when a worker takes it: the
    # AttributeError became States.Runtime instead of States.Timeout.
    callback.ActivityTaskStartEndpoint._outcome = None

    # A worker that completes a task before the interpreter thread set up its heartbeat wait
    # would be missed, and the task would time out despite its result: replay the outcome.
    endpoint_cls: Any = callback.CallbackEndpoint
    original_setup_heartbeat = endpoint_cls.setup_heartbeat_endpoint

    def setup_heartbeat_endpoint(self: Any, heartbeat_seconds: int) -> Any:
        heartbeat_endpoint = original_setup_heartbeat(self, heartbeat_seconds)
        if self.get_outcome() is not None:
            heartbeat_endpoint.notify()
        return heartbeat_endpoint

    endpoint_cls.setup_heartbeat_endpoint = setup_heartbeat_endpoint

    # (3) Once stopped, a state failing on its way out (the woken task) must not turn the
    # execution's end into ExecutionFailed.
    env_cls: Any = environment.Environment
    original_set_error = env_cls.set_error

    def set_error(self: Any, error: Any) -> None:
        if isinstance(self._program_state, ProgramStopped):
            return
        original_set_error(self, error)

    env_cls.set_error = set_error

    # (3)(5) When an execution ends, its open tokens close; StopExecution's status stays.
    comm_cls: Any = backend_execution.BaseExecutionWorkerCommunication
    original_reflect = comm_cls._reflect_execution_status

    def reflect_execution_status(self: Any) -> None:
        if execution_status(self.execution) != "ABORTED":
            original_reflect(self)
        hub.close_execution(self.execution.exec_arn)

    comm_cls._reflect_execution_status = reflect_execution_status


def _patch_backend(hub: ActivityHub) -> None:
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.asl.eval.callback.callback import (
        CallbackOutcomeFailure,
        CallbackOutcomeSuccess,
    )
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    backend_cls: Any = StepFunctionsParserBackend
    original_success = backend_cls.send_task_success
    original_failure = backend_cls.send_task_failure
    original_heartbeat = backend_cls.send_task_heartbeat

    # (2) Activity tokens are answered by the hub; others (.waitForTaskToken callbacks, tokens
    # never issued: InvalidToken) by moto.
    def send_task_success(self: Any, task_token: str, outcome: str) -> None:
        if not hub.knows(task_token):
            return original_success(self, task_token, outcome)  # type: ignore[no-any-return]
        hub.complete(task_token, CallbackOutcomeSuccess(callback_id=task_token, output=outcome))
        return None

    def send_task_failure(
        self: Any, task_token: str, error: str | None = None, cause: str | None = None
    ) -> Any:
        if not hub.knows(task_token):
            return original_failure(self, task_token, error=error, cause=cause)
        failure = CallbackOutcomeFailure(callback_id=task_token, error=error, cause=cause)
        hub.complete(task_token, failure)
        return None

    def send_task_heartbeat(self: Any, task_token: str) -> None:
        if not hub.knows(task_token):
            return original_heartbeat(self, task_token)  # type: ignore[no-any-return]
        hub.heartbeat(task_token)
        return None

    # (3) ABORTED at once with the given error and cause, as AWS reports it; the interpreter's
    # threads are woken so its history ends with ExecutionAborted shortly after.
    def stop_execution(
        self: Any, execution_arn: str, error: str | None = None, cause: str | None = None
    ) -> Any:
        execution = self.describe_execution(execution_arn)
        if execution_status(execution) != "RUNNING":
            return execution
        stop_date = _utcnow()
        # The interpreter thread creates its environment just after StartExecution returns.
        deadline = time.monotonic() + 5.0
        while execution.exec_worker.env is None and time.monotonic() < deadline:
            time.sleep(0.01)
        execution.exec_status = ExecutionStatus.ABORTED
        execution.stop_date = stop_date
        execution.error = error
        execution.cause = cause
        if execution.exec_worker.env is not None:
            execution.stop(stop_date=stop_date, error=error, cause=cause)
        hub.close_execution(execution_arn)
        return execution

    # (10) An execution started without a name gets the name "None" (a second one then fails
    # with ExecutionAlreadyExists); AWS generates a UUID.
    original_start_execution = backend_cls.start_execution

    def start_execution(
        self: Any, state_machine_arn: str, name: str | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        return original_start_execution(
            self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs
        )

    backend_cls.start_execution = start_execution
    backend_cls.send_task_success = send_task_success
    backend_cls.send_task_failure = send_task_failure
    backend_cls.send_task_heartbeat = send_task_heartbeat
    backend_cls.stop_execution = stop_execution


def _patch_responses(hub: ActivityHub) -> None:
    from moto.core.responses import ActionResult, EmptyResult
    from moto.stepfunctions.responses import StepFunctionResponse

    response_cls: Any = StepFunctionResponse

    # (1)(5)(6) GetActivityTask: ActivityDoesNotExist for an unknown activity (as AWS), else a
    # long poll that returns the first live task, or {} after the wait.
    def get_activity_task(self: Any) -> Any:
        activity_arn = self._get_param("activityArn")
        self.stepfunction_backend.describe_activity(activity_arn)
        task = hub.take(activity_arn, self._get_param("workerName"))
        if task is None:
            return ActionResult({})
        return ActionResult({"taskToken": task.token, "input": task.task_input})

    # (4) moto reads only `error`.
    def send_task_failure(self: Any) -> Any:
        self.stepfunction_backend.send_task_failure(
            self._get_param("taskToken"),
            error=self._get_param("error"),
            cause=self._get_param("cause"),
        )
        return EmptyResult()

    # (3) moto drops error and cause.
    def stop_execution(self: Any) -> Any:
        execution = self.stepfunction_backend.stop_execution(
            self._get_param("executionArn"),
            error=self._get_param("error"),
            cause=self._get_param("cause"),
        )
        return ActionResult({"stopDate": execution.stop_date})

    response_cls.get_activity_task = get_activity_task
    response_cls.send_task_failure = send_task_failure
    response_cls.stop_execution = stop_execution


def _patch_service_client_host() -> None:
    """(8) The interpreter's service calls go to `localhost`, which may resolve to ::1 or
    elsewhere: pin them to 127.0.0.1, the only address the emulator listens on."""
    import sys

    import boto3
    from botocore.config import Config
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds

    # Importing the factory imports every service integration module.
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_factory,  # noqa: F401
    )
    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        port = os.environ.get("MOTO_PORT", "5000")
        make_client: Any = boto3.client
        return make_client(
            service_name=service,
            region_name=region,
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="ak",
            aws_secret_access_key="sk",  # noqa: S106 - moto's own fake credentials
            config=Config(
                parameter_validation=False,
                retries={"max_attempts": 0, "total_max_attempts": 1},
                connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
            ),
        )

    for name, module in list(sys.modules.items()):
        if (
            name.startswith("moto.stepfunctions")
            and getattr(module, "boto_client_for", None) is original
        ):
            module.boto_client_for = boto_client_for  # type: ignore[attr-defined]


def _patch_autoscaling() -> None:
    """(7) CompleteLifecycleAction answers HTTP 500 in moto: accept it, as AWS does."""
    from moto.autoscaling.responses import AutoScalingResponse
    from moto.core.responses import EmptyResult

    def complete_lifecycle_action(self: Any) -> Any:
        _log.info(
            "CompleteLifecycleAction group=%s hook=%s result=%s instance=%s",
            self._get_param("AutoScalingGroupName"),
            self._get_param("LifecycleHookName"),
            self._get_param("LifecycleActionResult"),
            self._get_param("InstanceId"),
        )
        return EmptyResult()

    response_cls: Any = AutoScalingResponse
    response_cls.complete_lifecycle_action = complete_lifecycle_action


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def aws_timestamp(moment: datetime.datetime) -> str:
    """`2026-11-27T08:01:02.123Z`, as Step Functions writes times in the context object."""
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class _AwsDatetime(datetime.datetime):
    """What moto's state module gets as `datetime.datetime`: its one use is
    `now(tz=utc).isoformat()` for `$$.State.EnteredTime`."""

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return aws_timestamp(self)
