"""What moto 5.2.5's Step Functions interpreter does for the workflow definition, without any
patch of the bridge: its service integrations, error names and intrinsics, kept as tests so a
moto upgrade that changes one fails here first."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pytest
from conftest import POLL_WAIT_S, AwsClients
from sfn_helpers import make_activity, make_machine, start, take, wait_done

# What the interpreter does for the workflow definition (findings, kept as tests).


def lock_machine(table: str) -> dict[str, Any]:
    """putItem, updateItem taking a lock twice (the second fails its condition, caught), getItem."""
    lock = {
        "Type": "Task",
        "Resource": "arn:aws:states:::dynamodb:updateItem",
        "Parameters": {
            "TableName": table,
            "Key": {"id": {"S": "w1"}},
            "UpdateExpression": "SET #lock = :me",
            "ConditionExpression": "attribute_exists(id) AND attribute_not_exists(#lock)",
            "ExpressionAttributeNames": {"#lock": "holder"},
            "ExpressionAttributeValues": {":me": {"S.$": "$$.Execution.Name"}},
        },
        "ResultPath": None,
    }
    return {
        "StartAt": "Put",
        "States": {
            "Put": {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Parameters": {
                    "TableName": table,
                    "Item": {
                        "id": {"S": "w1"},
                        "entered": {"S.$": "$$.State.EnteredTime"},
                        "started": {"S.$": "$$.Execution.StartTime"},
                    },
                },
                "ResultPath": None,
                "Next": "Lock",
            },
            "Lock": {**lock, "Next": "LockAgain"},
            "LockAgain": {
                **lock,
                "Catch": [
                    {
                        "ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"],
                        "ResultPath": "$.error",
                        "Next": "Get",
                    }
                ],
                "Next": "Get",
            },
            "Get": {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:getItem",
                "Parameters": {"TableName": table, "Key": {"id": {"S": "w1"}}},
                "ResultPath": "$.got",
                "End": True,
            },
        },
    }


def test_dynamodb_integrations_and_the_conditional_check_error_name(
    aws: AwsClients, uid: str
) -> None:
    table = f"locks-{uid}"
    aws.ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    execution = start(aws, make_machine(aws, uid, lock_machine(table)))
    described = wait_done(aws, execution)
    assert described["status"] == "SUCCEEDED", described.get("cause")
    output = json.loads(described["output"])
    assert output["error"]["Error"] == "DynamoDB.ConditionalCheckFailedException"
    assert output["got"]["Item"]["holder"] == {"S": execution.rsplit(":", 1)[1]}


def test_sns_publish_integration(aws: AwsClients, uid: str) -> None:
    topic = aws.sns.create_topic(Name=f"notify-{uid}")["TopicArn"]
    definition = {
        "StartAt": "Notify",
        "States": {
            "Notify": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sns:publish",
                "Parameters": {
                    "TopicArn": topic,
                    "Subject.$": "States.Format('rsql workflow {} {}', $.w, 'Completed')",
                    "Message": "done",
                },
                "End": True,
            }
        },
    }
    described = wait_done(aws, start(aws, make_machine(aws, uid, definition), {"w": "wf"}))
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert json.loads(described["output"])["MessageId"]


def test_fail_state_error_path_and_cause_path(aws: AwsClients, uid: str) -> None:
    definition = {
        "StartAt": "Fail",
        "States": {"Fail": {"Type": "Fail", "ErrorPath": "$.e.Error", "CausePath": "$.e.Cause"}},
    }
    payload = {"e": {"Error": "RSQL.ScriptFailed", "Cause": "exit code 2"}}
    described = wait_done(aws, start(aws, make_machine(aws, uid, definition), payload))
    assert (described["status"], described["error"], described["cause"]) == (
        "FAILED",
        "RSQL.ScriptFailed",
        "exit code 2",
    )


def test_intrinsics_in_pass_parameters_and_map_item_selector(aws: AwsClients, uid: str) -> None:
    definition = {
        "StartAt": "Settings",
        "States": {
            "Settings": {
                "Type": "Pass",
                "Parameters": {
                    "n.$": "States.StringToJson($.n)",
                    "items.$": "$.items",
                    "timeout.$": "States.MathAdd(States.StringToJson($.n), 60)",
                },
                "Next": "Each",
            },
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrencyPath": "$.n",
                "ItemSelector": {
                    "name.$": "$$.Map.Item.Value.S",
                    "index.$": "$$.Map.Item.Index",
                    "limit.$": "States.MathAdd($.timeout, 1)",
                    "parsed.$": "States.StringToJson('{\"a\": 1}')",
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "Echo",
                    "States": {"Echo": {"Type": "Pass", "End": True}},
                },
                "End": True,
            },
        },
    }
    payload = {"n": "2", "items": [{"S": "a.sh"}, {"S": "b.sh"}]}
    described = wait_done(aws, start(aws, make_machine(aws, uid, definition), payload))
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert json.loads(described["output"]) == [
        {"name": "a.sh", "index": 0, "limit": 63, "parsed": {"a": 1}},
        {"name": "b.sh", "index": 1, "limit": 63, "parsed": {"a": 1}},
    ]


def test_map_max_concurrency_path_limits_activity_tasks_in_flight(
    aws: AwsClients, uid: str
) -> None:
    activity = make_activity(aws, uid)
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.jobs",
                "MaxConcurrencyPath": "$.max",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "Run",
                    "States": {
                        "Run": {
                            "Type": "Task",
                            "Resource": activity,
                            "TimeoutSeconds": 30,
                            "End": True,
                        }
                    },
                },
                "End": True,
            }
        },
    }
    jobs = [{"job_name": "a"}, {"job_name": "b"}]
    execution = start(aws, make_machine(aws, uid, definition), {"jobs": jobs, "max": 1})
    first = take(aws, activity)
    with ThreadPoolExecutor(1) as pool:
        second_poll = pool.submit(aws.sfn.get_activity_task, activityArn=activity)
        # With one in flight, the second job must not be scheduled yet.
        with pytest.raises(FutureTimeout):
            second_poll.result(timeout=1)
        aws.sfn.send_task_success(taskToken=first["taskToken"], output='"one"')
        second = second_poll.result(timeout=POLL_WAIT_S + 5)
    assert second.get("taskToken"), "the second job was not scheduled after the first ended"
    names = {json.loads(task["input"])["job_name"] for task in (first, second)}
    assert names == {"a", "b"}
    aws.sfn.send_task_success(taskToken=second["taskToken"], output='"two"')
    assert wait_done(aws, execution)["status"] == "SUCCEEDED"


def test_retry_and_catch_match_custom_error_names(aws: AwsClients, uid: str) -> None:
    activity = make_activity(aws, uid)
    definition = {
        "StartAt": "Run",
        "States": {
            "Run": {
                "Type": "Task",
                "Resource": activity,
                "TimeoutSeconds": 30,
                "Retry": [
                    {"ErrorEquals": ["Agent.ShuttingDown"], "IntervalSeconds": 1, "MaxAttempts": 3}
                ],
                "Catch": [
                    {
                        "ErrorEquals": ["RSQL.ScriptFailed"],
                        "ResultPath": "$.error",
                        "Next": "Failed",
                    }
                ],
                "End": True,
            },
            "Failed": {"Type": "Pass", "End": True},
        },
    }
    execution = start(aws, make_machine(aws, uid, definition))
    first = take(aws, activity)["taskToken"]
    aws.sfn.send_task_failure(taskToken=first, error="Agent.ShuttingDown", cause="draining")
    second = take(aws, activity)["taskToken"]  # retried: another host takes it
    assert second != first
    aws.sfn.send_task_failure(taskToken=second, error="RSQL.ScriptFailed", cause="exit code 1")
    output = json.loads(wait_done(aws, execution)["output"])
    assert output["error"] == {"Error": "RSQL.ScriptFailed", "Cause": "exit code 1"}
