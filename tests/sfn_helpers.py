"""Helpers for the Step Functions tests against the emulator: state machines, executions, one
activity task taken as a worker would."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import AwsClients

ROLE_ARN = "arn:aws:iam::123456789012:role/rsql-test-role"


# Helpers.


def make_activity(aws: AwsClients, uid: str) -> str:
    return str(aws.sfn.create_activity(name=f"jobs-{uid}")["activityArn"])


def make_machine(aws: AwsClients, uid: str, definition: dict[str, Any]) -> str:
    response = aws.sfn.create_state_machine(
        name=f"sm-{uid}", definition=json.dumps(definition), roleArn=ROLE_ARN
    )
    return str(response["stateMachineArn"])


def one_task(activity: str, **task: Any) -> dict[str, Any]:
    """A state machine with a single activity Task."""
    return {"StartAt": "Run", "States": {"Run": {"Type": "Task", "Resource": activity, **task}}}


def inline_map(processor_start: dict[str, Any], **map_fields: Any) -> dict[str, Any]:
    """An inline Map state over `$.items` whose processor is the one state given."""
    return {
        "Type": "Map",
        "ItemsPath": "$.items",
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "INLINE"},
            "StartAt": "Each",
            "States": {"Each": processor_start},
        },
        **map_fields,
    }


def start(aws: AwsClients, machine: str, payload: dict[str, Any] | None = None) -> str:
    response = aws.sfn.start_execution(stateMachineArn=machine, input=json.dumps(payload or {}))
    return str(response["executionArn"])


def wait_done(aws: AwsClients, execution: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """Poll DescribeExecution until the execution is no longer RUNNING."""
    deadline = time.monotonic() + timeout_s
    while True:
        described: dict[str, Any] = aws.sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() > deadline:
            raise AssertionError(f"{execution} still RUNNING after {timeout_s} s")
        time.sleep(0.05)


def take(aws: AwsClients, activity: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """GetActivityTask until a task comes (each empty poll lasts POLL_WAIT_S)."""
    deadline = time.monotonic() + timeout_s
    while True:
        task: dict[str, Any] = aws.sfn.get_activity_task(activityArn=activity, workerName="t")
        if task.get("taskToken"):
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"no task on {activity} within {timeout_s} s")


def error_of(call: Any, **kwargs: Any) -> tuple[str, int]:
    """(error code, HTTP status) of a call that must fail."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def token_call_errors(aws: AwsClients, token: str) -> list[tuple[str, int]]:
    """error_of each call a worker makes with a token: heartbeat, success, failure."""
    return [
        error_of(aws.sfn.send_task_heartbeat, taskToken=token),
        error_of(aws.sfn.send_task_success, taskToken=token, output="{}"),
        error_of(aws.sfn.send_task_failure, taskToken=token, error="E"),
    ]


def history_types(aws: AwsClients, execution: str) -> list[str]:
    events = aws.sfn.get_execution_history(executionArn=execution)["events"]
    return [event["type"] for event in events]
