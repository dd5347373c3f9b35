"""The bridge's patches to moto's `states:startExecution` service integration, which the state
machine uses to run a wide or long stage in child executions of itself; one function per gap,
lettered as in the list in `cloud/emulator/bridge.py`.

moto 5.2.5 hands the Task's parameters to boto3 as ASL spells them (`StateMachineArn`), which
boto3 rejects (its names are `stateMachineArn`): every startExecution Task fails with
States.Runtime. Its answers are boto3's (`executionArn`), where AWS's optimized integration
answers `ExecutionArn`, `StartDate` (epoch milliseconds), and, for `.sync:2`, `Input` and
`Output` as JSON. And when the Task ends before its child (the parent is stopped, or its Map
gives up the iteration), AWS stops the child (the role's `states:StopExecution` is for that);
moto leaves it running.
"""

from __future__ import annotations

import datetime
from typing import Any, Final

from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_sfn,
)
from moto.stepfunctions.parser.models import stepfunctions_parser_backends

from cloud.emulator.hub import execution_status

# ASL's parameter names for StartExecution, and boto3's.
_START_EXECUTION_PARAMETERS: Final = {
    "StateMachineArn": "stateMachineArn",
    "Input": "input",
    "Name": "name",
    "TraceHeader": "traceHeader",
}


def pascal_case(answer: dict[str, Any]) -> dict[str, Any]:
    """An API answer as the optimized integration gives it: `ExecutionArn`, `InputDetails:
    {Included}`, dates in epoch milliseconds; `Input`/`Output` (the data) stay as they are."""
    converted: dict[str, Any] = {}
    for key, value in answer.items():
        if isinstance(value, datetime.datetime):
            value = int(value.timestamp() * 1000)
        elif key.endswith("Details") and isinstance(value, dict):
            value = pascal_case(value)
        converted[key[:1].upper() + key[1:]] = value
    return converted


def start_execution_parameters_as_boto3_names_them() -> None:
    """(d) `StateMachineArn`/`Input`/`Name` reach boto3 as `stateMachineArn`/`input`/`name`."""
    task_cls: Any = state_task_service_sfn.StateTaskServiceSfn
    original_normalise_parameters = task_cls._normalise_parameters

    def normalise_parameters(self: Any, parameters: dict[str, Any], *args: Any, **kw: Any) -> None:
        original_normalise_parameters(self, parameters, *args, **kw)
        for asl_name, boto_name in _START_EXECUTION_PARAMETERS.items():
            if asl_name in parameters:
                parameters[boto_name] = parameters.pop(asl_name)

    task_cls._normalise_parameters = normalise_parameters


def start_execution_answers_as_aws_does() -> None:
    """(d) The StartExecution answer and the `.sync`/`.sync:2` DescribeExecution answer (a
    failed child's is the Task's cause) in the optimized integration's names."""
    task_cls: Any = state_task_service_sfn.StateTaskServiceSfn
    original_eval_service_task = task_cls._eval_service_task
    original_normalise_response = task_cls._normalise_response

    def eval_service_task(self: Any, env: Any, *args: Any, **kwargs: Any) -> None:
        original_eval_service_task(self, env, *args, **kwargs)
        if isinstance(env.stack[-1], dict):
            env.stack.append(pascal_case(env.stack.pop()))

    def normalise_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> None:
        original_normalise_response(self, response, *args, **kwargs)
        if isinstance(response, dict):
            converted = pascal_case(response)
            response.clear()  # in place: moto keeps using the object it passed
            response.update(converted)

    task_cls._eval_service_task = eval_service_task
    task_cls._normalise_response = normalise_response


def abandoned_children_are_stopped() -> None:
    """(e) A `.sync` Task that ends while its child still runs (its execution was stopped or
    failed, or its Map iteration was given up) stops the child, as AWS does."""
    task_cls: Any = state_task_service_sfn.StateTaskServiceSfn
    original_eval_integration_pattern = task_cls._eval_integration_pattern

    def eval_integration_pattern(self: Any, env: Any, *args: Any, **kwargs: Any) -> None:
        submitted = env.stack[-1] if env.stack else None
        child = submitted.get("ExecutionArn") if isinstance(submitted, dict) else None
        try:
            original_eval_integration_pattern(self, env, *args, **kwargs)
        finally:
            if isinstance(child, str):
                _stop_if_running(child, env)

    task_cls._eval_integration_pattern = eval_integration_pattern


def _stop_if_running(child_arn: str, env: Any) -> None:
    context = env.states.context_object.context_object_data
    parent_arn = context["Execution"]["Id"]
    # arn:aws:states:<region>:<account>:execution:<machine>:<name>
    _, _, _, region, account, *_ = child_arn.split(":")
    backend: Any = stepfunctions_parser_backends[account][region]
    execution = backend.describe_execution(child_arn)
    if execution_status(execution) == "RUNNING":
        backend.stop_execution(
            child_arn,
            cause=f"The Task state of execution {parent_arn} that started it has ended.",
        )
