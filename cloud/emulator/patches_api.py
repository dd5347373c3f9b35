"""The bridge's patches to moto's API side (the Step Functions backend and responses, the
interpreter's service clients, Auto Scaling, DynamoDB), one function per gap; the numbers are
those of the list in `cloud/emulator/bridge.py`. Applied once, by `bridge.apply()`.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import sys
import time
import uuid
from typing import Any, Final

import boto3
from botocore.config import Config
from moto.core.exceptions import AWSError
from moto.core.responses import ActionResult, EmptyResult
from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.models import DynamoDBBackend
from moto.stepfunctions.parser.api import ExecutionStatus
from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds

# Importing the factory imports every service integration module (see `pin_service_client_host`).
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_factory,  # noqa: F401
)
from moto.stepfunctions.parser.asl.eval.callback.callback import (
    CallbackOutcomeFailure,
    CallbackOutcomeSuccess,
)
from moto.stepfunctions.parser.asl.utils import boto_client
from moto.stepfunctions.parser.models import StepFunctionsParserBackend
from moto.stepfunctions.responses import StepFunctionResponse

from cloud.emulator.hub import ActivityHub, execution_status

_log = logging.getLogger(__name__)
# How long StopExecution waits for the interpreter thread to create its environment (it does
# so just after StartExecution returns).
_INTERPRETER_START_WAIT_S = 5.0


def activity_tokens_answer_from_the_hub(hub: ActivityHub) -> None:
    """(2) SendTaskSuccess/Failure/Heartbeat on an activity token are answered by the hub (a
    closed token: TaskTimedOut); others (.waitForTaskToken callbacks, tokens never issued:
    InvalidToken) by moto."""
    backend_cls: Any = StepFunctionsParserBackend
    original_success = backend_cls.send_task_success
    original_failure = backend_cls.send_task_failure
    original_heartbeat = backend_cls.send_task_heartbeat

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

    backend_cls.send_task_success = send_task_success
    backend_cls.send_task_failure = send_task_failure
    backend_cls.send_task_heartbeat = send_task_heartbeat


def stop_execution_aborts_at_once(hub: ActivityHub) -> None:
    """(3) StopExecution ends the execution ABORTED at once with the given error and cause, as
    AWS reports it (moto drops both and leaves it RUNNING until the task times out); the
    interpreter's threads are woken so its history ends with ExecutionAborted shortly after."""

    def backend_stop_execution(
        self: Any, execution_arn: str, error: str | None = None, cause: str | None = None
    ) -> Any:
        execution = self.describe_execution(execution_arn)
        if execution_status(execution) != "RUNNING":
            return execution
        stop_date = datetime.datetime.now(tz=datetime.UTC)
        deadline = time.monotonic() + _INTERPRETER_START_WAIT_S
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

    def response_stop_execution(self: Any) -> Any:
        execution = self.stepfunction_backend.stop_execution(
            self._get_param("executionArn"),
            error=self._get_param("error"),
            cause=self._get_param("cause"),
        )
        return ActionResult({"stopDate": execution.stop_date})

    backend_cls: Any = StepFunctionsParserBackend
    backend_cls.stop_execution = backend_stop_execution
    response_cls: Any = StepFunctionResponse
    response_cls.stop_execution = response_stop_execution


def unnamed_executions_get_a_uuid() -> None:
    """(10) An execution started without a name gets the name "None" (a second one then fails
    with ExecutionAlreadyExists); AWS generates a UUID."""
    backend_cls: Any = StepFunctionsParserBackend
    original_start_execution = backend_cls.start_execution

    def start_execution(
        self: Any, state_machine_arn: str, name: str | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        return original_start_execution(
            self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs
        )

    backend_cls.start_execution = start_execution


def get_activity_task_long_polls_the_hub(hub: ActivityHub) -> None:
    """(1)(5)(6) GetActivityTask: ActivityDoesNotExist for an unknown activity (as AWS), else a
    long poll that returns the first live task, or {} after the wait."""

    def get_activity_task(self: Any) -> Any:
        activity_arn = self._get_param("activityArn")
        self.stepfunction_backend.describe_activity(activity_arn)
        task = hub.take(activity_arn, self._get_param("workerName"))
        if task is None:
            return ActionResult({})
        return ActionResult({"taskToken": task.token, "input": task.task_input})

    response_cls: Any = StepFunctionResponse
    response_cls.get_activity_task = get_activity_task


def send_task_failure_keeps_the_cause() -> None:
    """(4) moto's SendTaskFailure reads only `error`: pass `cause` on too."""

    def send_task_failure(self: Any) -> Any:
        self.stepfunction_backend.send_task_failure(
            self._get_param("taskToken"),
            error=self._get_param("error"),
            cause=self._get_param("cause"),
        )
        return EmptyResult()

    response_cls: Any = StepFunctionResponse
    response_cls.send_task_failure = send_task_failure


def pin_service_client_host() -> None:
    """(8) The interpreter's service calls go to `localhost`, which may resolve to ::1 or
    elsewhere: pin them to 127.0.0.1, the only address the emulator listens on."""
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

    # Every service integration module bound the function at its import: rebind each.
    for name, module in list(sys.modules.items()):
        if (
            name.startswith("moto.stepfunctions")
            and getattr(module, "boto_client_for", None) is original
        ):
            module.boto_client_for = boto_client_for  # type: ignore[attr-defined]


def query_on_a_missing_index_is_a_validation_error() -> None:
    """(12) A Query naming an index the table lacks answers ValidationException ("The table
    does not have the specified index: X"), as AWS does; moto answers ResourceNotFoundException,
    which reads as "no such table" (`workflow history` falls back to a Scan on the former)."""
    backend_cls: Any = DynamoDBBackend
    original = backend_cls.get_schema

    def get_schema(self: Any, table_name: str, index_name: str | None) -> Any:
        if index_name:
            table = self.get_table(table_name)
            indexes = (table.global_indexes or []) + (table.indexes or [])
            if index_name not in {index.name for index in indexes}:
                raise MockValidationException(
                    f"The table does not have the specified index: {index_name}"
                )
        return original(self, table_name, index_name)

    backend_cls.get_schema = get_schema


def scheduler_checks_what_aws_checks() -> None:
    """(14) CreateSchedule/UpdateSchedule: moto takes any expression and time zone, and a group
    that does not exist fails with HTTP 500 (KeyError). AWS answers ValidationException and
    ResourceNotFoundException."""
    from moto.scheduler.exceptions import ScheduleGroupNotFound, ValidationException
    from moto.scheduler.models import EventBridgeSchedulerBackend

    from cloud import schedule_expressions

    def check(self: Any, kwargs: dict[str, Any]) -> None:
        group = kwargs.get("group_name") or "default"
        if group not in self.schedule_groups:
            raise ScheduleGroupNotFound(group)
        try:
            schedule_expressions.parse(kwargs.get("schedule_expression") or "")
            schedule_expressions.check_timezone(kwargs.get("schedule_expression_timezone") or "UTC")
        except schedule_expressions.ExpressionError as exc:
            raise ValidationException(f"Invalid Schedule Expression {exc}") from None

    backend_cls: Any = EventBridgeSchedulerBackend
    original_create = backend_cls.create_schedule
    original_update = backend_cls.update_schedule

    def create_schedule(self: Any, **kwargs: Any) -> Any:
        check(self, kwargs)
        return original_create(self, **kwargs)

    def update_schedule(self: Any, **kwargs: Any) -> Any:
        check(self, kwargs)
        return original_update(self, **kwargs)

    backend_cls.create_schedule = create_schedule
    backend_cls.update_schedule = update_schedule


def put_scaling_policy_answers_its_arn() -> None:
    """(15) PutScalingPolicy answers `PolicyArn`, which the SDKs do not read: AWS answers
    `PolicyARN` (what an alarm's action names) and `Alarms`."""
    from moto.autoscaling.responses import AutoScalingResponse

    original = AutoScalingResponse.put_scaling_policy

    def put_scaling_policy(self: Any) -> Any:
        answer: Any = original(self).result
        arn = answer["PolicyArn"]
        return ActionResult({"PolicyARN": arn, "Alarms": []})

    response_cls: Any = AutoScalingResponse
    response_cls.put_scaling_policy = put_scaling_policy


def launch_template_versions_keep_user_data() -> None:
    """(16) CreateLaunchTemplateVersion stores UserData as plain text where CreateLaunchTemplate
    stores it decoded-checked; a group then launching from the new version fails with HTTP 500.
    AWS takes both alike."""
    from moto.ec2.models.launch_templates import LaunchTemplate
    from moto.ec2.utils import parse_user_data

    template_cls: Any = LaunchTemplate
    original = template_cls.create_version

    def create_version(self: Any, data: dict[str, Any], description: str) -> Any:
        if isinstance(data.get("UserData"), str):
            data = {**data, "UserData": parse_user_data(data["UserData"])}
        return original(self, data, description)

    template_cls.create_version = create_version


class _InvalidToken(AWSError):
    TYPE = "InvalidToken"
    STATUS = 400


# GetExecutionHistory: a page holds 100 events unless maxResults says otherwise (at most 1,000).
_HISTORY_PAGE_DEFAULT: Final = 100
_HISTORY_PAGE_MAX: Final = 1000


def execution_history_in_pages() -> None:
    """(18) GetExecutionHistory answers every event at once, oldest first, whatever maxResults,
    nextToken and reverseOrder say, copying all of them per call: a 25,000-event history takes
    seconds per call. Pages as AWS gives them (100 events unless maxResults, at most 1,000)."""

    def get_execution_history(self: Any) -> Any:
        execution = self.stepfunction_backend.describe_execution(self._get_param("executionArn"))
        size = self._get_int_param("maxResults") or _HISTORY_PAGE_DEFAULT
        if not 0 < size <= _HISTORY_PAGE_MAX:
            raise _InvalidToken(f"maxResults must be 0-{_HISTORY_PAGE_MAX}, got {size}")
        token = self._get_param("nextToken")
        if token is not None and not str(token).isdigit():
            raise _InvalidToken(f"Invalid Token: '{token}'")
        start = int(token or 0)
        env = execution.exec_worker.env if execution.exec_worker else None
        events: list[Any] = []
        if env is not None:
            manager = env.event_manager
            with manager._mutex:  # a shallow copy: events are not changed once written
                events = list(manager._history_event_list)
        if self._get_bool_param("reverseOrder", False):
            events.reverse()
        page = copy.deepcopy(events[start : start + size])
        answer: dict[str, Any] = {"events": page}
        if start + size < len(events):
            answer["nextToken"] = str(start + size)
        return ActionResult(answer)

    response_cls: Any = StepFunctionResponse
    response_cls.get_execution_history = get_execution_history
