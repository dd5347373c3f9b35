"""The `states:startExecution` integration in the emulator (cloud/emulator/patches_nested.py,
lettered as in the list in cloud/emulator/bridge.py): how the state machine runs a wide or
long stage in child executions of itself. On a bare moto 5.2.5 every such Task fails with
States.Runtime."""

from __future__ import annotations

import json
from typing import Any

from conftest import AwsClients
from sfn_helpers import (
    error_of,
    history_types,
    make_activity,
    make_machine,
    start,
    take,
    wait_done,
)


def _parent_and_child(resource: str, child: dict[str, Any]) -> dict[str, Any]:
    """A state machine that, given `child` in its input, runs as the child; else starts
    itself with `{"child": <its input's kid>}` through `resource`."""
    return {
        "StartAt": "Which",
        "States": {
            "Which": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.child", "IsPresent": True, "Next": "Child"}],
                "Default": "StartChild",
            },
            "Child": child,
            "StartChild": {
                "Type": "Task",
                "Resource": resource,
                "Parameters": {
                    "StateMachineArn.$": "$$.StateMachine.Id",
                    "Input": {"child.$": "$.kid"},
                },
                "End": True,
            },
        },
    }


def _children(aws: AwsClients, machine: str, parent: str) -> list[str]:
    listed = aws.sfn.list_executions(stateMachineArn=machine)["executions"]
    return [e["executionArn"] for e in listed if e["executionArn"] != parent]


def test_a_sync2_task_runs_a_child_execution_and_answers_as_aws(aws: AwsClients, uid: str) -> None:
    child = {"Type": "Pass", "Parameters": {"echo.$": "$.child"}, "End": True}
    definition = _parent_and_child("arn:aws:states:::states:startExecution.sync:2", child)
    machine = make_machine(aws, uid, definition)
    parent = start(aws, machine, {"kid": {"a": 1}})
    described = wait_done(aws, parent)
    assert described["status"] == "SUCCEEDED"
    answer = json.loads(described["output"])
    (child_arn,) = _children(aws, machine, parent)
    # The optimized integration's names; Input and Output as JSON with .sync:2.
    assert answer["ExecutionArn"] == child_arn
    assert answer["Status"] == "SUCCEEDED"
    assert answer["Output"] == {"echo": {"a": 1}}
    assert answer["Input"] == {"child": {"a": 1}}
    assert isinstance(answer["StartDate"], int) and isinstance(answer["StopDate"], int)
    # Each execution has a history of its own.
    assert "PassStateEntered" not in history_types(aws, parent)
    assert "PassStateEntered" in history_types(aws, child_arn)


def test_a_failed_child_fails_the_task_with_its_description_as_the_cause(
    aws: AwsClients, uid: str
) -> None:
    child = {"Type": "Fail", "Error": "RSQL.ScriptFailed", "Cause": "exit 3"}
    definition = _parent_and_child("arn:aws:states:::states:startExecution.sync:2", child)
    parent = start(aws, make_machine(aws, uid, definition), {"kid": 1})
    described = wait_done(aws, parent)
    assert (described["status"], described["error"]) == ("FAILED", "States.TaskFailed")
    cause = json.loads(described["cause"])
    assert (cause["Status"], cause["Error"], cause["Cause"]) == (
        "FAILED",
        "RSQL.ScriptFailed",
        "exit 3",
    )


def test_start_execution_without_waiting_answers_its_arn_and_start_date(
    aws: AwsClients, uid: str
) -> None:
    child = {"Type": "Pass", "End": True}
    definition = _parent_and_child("arn:aws:states:::states:startExecution", child)
    machine = make_machine(aws, uid, definition)
    parent = start(aws, machine, {"kid": 1})
    answer = json.loads(wait_done(aws, parent)["output"])
    assert set(answer) == {"ExecutionArn", "StartDate"}
    assert [answer["ExecutionArn"]] == _children(aws, machine, parent)


def test_stopping_the_parent_stops_its_running_child(aws: AwsClients, uid: str) -> None:
    activity = make_activity(aws, uid)
    child = {"Type": "Task", "Resource": activity, "TimeoutSeconds": 60, "End": True}
    definition = _parent_and_child("arn:aws:states:::states:startExecution.sync:2", child)
    machine = make_machine(aws, uid, definition)
    parent = start(aws, machine, {"kid": 1})
    token = take(aws, activity)["taskToken"]  # the child is running its task
    (child_arn,) = _children(aws, machine, parent)

    aws.sfn.stop_execution(executionArn=parent, error="Operator.Stop", cause="enough")
    # The parent's Task notices within its poll of the child (0.5 s) and stops the child.
    stopped = wait_done(aws, child_arn, timeout_s=10)
    assert stopped["status"] == "ABORTED"
    assert parent in stopped.get("cause", "")
    # Its task is over: the worker learns it at its next call.
    assert error_of(aws.sfn.send_task_heartbeat, taskToken=token) == ("TaskTimedOut", 400)
