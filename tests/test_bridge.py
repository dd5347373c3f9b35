"""The activity bridge (cloud/emulator/bridge.py), driven through boto3 against the running
emulator: one test per gap of moto 5.2.5 the bridge closes (numbered as in its docstring), so a
moto upgrade that breaks one fails here first. tests/test_interpreter.py has the interpreter's
own features the state machine relies on.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError
from conftest import POLL_WAIT_S, AwsClients
from sfn_helpers import (
    ROLE_ARN,
    error_of,
    history_types,
    inline_map,
    make_activity,
    make_machine,
    one_task,
    start,
    take,
    token_call_errors,
    wait_done,
)

# (1) Routing and the activity store.


def test_activity_task_reaches_a_worker_and_its_output_becomes_the_state_output(
    aws: AwsClients, uid: str
) -> None:
    activity = make_activity(aws, uid)
    machine = make_machine(aws, uid, one_task(activity, TimeoutSeconds=30, End=True))
    execution = start(aws, machine, {"job_name": "a.sh"})

    task = take(aws, activity)
    assert json.loads(task["input"]) == {"job_name": "a.sh"}
    aws.sfn.send_task_success(taskToken=task["taskToken"], output='{"exit_code": 0}')

    described = wait_done(aws, execution)
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == {"exit_code": 0}
    assert "ActivityStarted" in history_types(aws, execution)


def test_an_empty_poll_waits_the_poll_time_then_returns_no_token(aws: AwsClients, uid: str) -> None:
    activity = make_activity(aws, uid)
    started = time.monotonic()
    task = aws.sfn.get_activity_task(activityArn=activity)
    elapsed = time.monotonic() - started
    assert "taskToken" not in task
    assert POLL_WAIT_S - 0.2 <= elapsed < POLL_WAIT_S + 2


def test_a_task_scheduled_while_a_worker_polls_is_delivered_at_once(
    aws: AwsClients, uid: str
) -> None:
    activity = make_activity(aws, uid)
    # The Wait state schedules the task about 1 s after the poll below has started waiting.
    definition = {
        "StartAt": "Later",
        "States": {
            "Later": {"Type": "Wait", "Seconds": 1, "Next": "Run"},
            "Run": {"Type": "Task", "Resource": activity, "TimeoutSeconds": 30, "End": True},
        },
    }
    machine = make_machine(aws, uid, definition)
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        poll = pool.submit(aws.sfn.get_activity_task, activityArn=activity)
        execution = start(aws, machine)
        task = poll.result(timeout=POLL_WAIT_S + 5)
        elapsed = time.monotonic() - started
    assert task.get("taskToken"), "the waiting poll got nothing"
    assert elapsed < POLL_WAIT_S - 0.5, f"delivered only at the end of the wait ({elapsed:.1f} s)"
    aws.sfn.send_task_success(taskToken=task["taskToken"], output="{}")
    assert wait_done(aws, execution)["status"] == "SUCCEEDED"


# (6) Unknown activity.


def test_polling_an_unknown_activity_answers_activity_does_not_exist(
    aws: AwsClients, uid: str
) -> None:
    # As AWS: an error (HTTP 400), not an empty answer a poller would repeat at once.
    missing = f"arn:aws:states:us-east-1:123456789012:activity:missing-{uid}"
    assert error_of(aws.sfn.get_activity_task, activityArn=missing) == (
        "ActivityDoesNotExist",
        400,
    )
    deleted = make_activity(aws, uid)
    aws.sfn.delete_activity(activityArn=deleted)
    assert error_of(aws.sfn.get_activity_task, activityArn=deleted)[0] == "ActivityDoesNotExist"


# (2) Closed and unknown tokens.


def test_calls_on_a_timed_out_token_answer_task_timed_out(aws: AwsClients, uid: str) -> None:
    activity = make_activity(aws, uid)
    machine = make_machine(
        aws, uid, one_task(activity, HeartbeatSeconds=1, TimeoutSeconds=20, End=True)
    )
    execution = start(aws, machine)
    token = take(aws, activity)["taskToken"]

    described = wait_done(aws, execution)  # no heartbeat: times out after 1 s
    assert (described["status"], described["error"]) == ("FAILED", "States.Timeout")

    assert token_call_errors(aws, token) == [("TaskTimedOut", 400)] * 3


def test_a_completed_token_answers_task_timed_out(aws: AwsClients, uid: str) -> None:
    activity = make_activity(aws, uid)
    machine = make_machine(aws, uid, one_task(activity, TimeoutSeconds=30, End=True))
    execution = start(aws, machine)
    token = take(aws, activity)["taskToken"]
    aws.sfn.send_task_success(taskToken=token, output='{"n": 1}')

    # A second completion must not be accepted and must not change the result.
    assert error_of(aws.sfn.send_task_success, taskToken=token, output='{"n": 2}') == (
        "TaskTimedOut",
        400,
    )
    assert json.loads(wait_done(aws, execution)["output"]) == {"n": 1}


def test_tokens_never_issued_answer_invalid_token(aws: AwsClients) -> None:
    # AWS answers InvalidToken for a token it cannot read; emulator tokens are UUIDs.
    for token in ("not-a-token", str(uuid.uuid4())):
        assert token_call_errors(aws, token) == [("InvalidToken", 400)] * 3


# (3) StopExecution.


def test_stop_execution_aborts_at_once_and_keeps_error_and_cause(aws: AwsClients, uid: str) -> None:
    activity = make_activity(aws, uid)
    machine = make_machine(
        aws, uid, one_task(activity, HeartbeatSeconds=30, TimeoutSeconds=60, End=True)
    )
    execution = start(aws, machine)
    token = take(aws, activity)["taskToken"]

    aws.sfn.stop_execution(executionArn=execution, error="Ops.Stopped", cause="by an operator")
    described = aws.sfn.describe_execution(executionArn=execution)  # no waiting: at once
    assert described["status"] == "ABORTED"
    assert (described["error"], described["cause"]) == ("Ops.Stopped", "by an operator")
    assert "stopDate" in described

    # The worker holding the task learns it is over at its next heartbeat.
    assert error_of(aws.sfn.send_task_heartbeat, taskToken=token) == ("TaskTimedOut", 400)
    deadline = time.monotonic() + 5
    while history_types(aws, execution)[-1] != "ExecutionAborted":
        assert time.monotonic() < deadline, history_types(aws, execution)
        time.sleep(0.05)
    assert aws.sfn.describe_execution(executionArn=execution)["status"] == "ABORTED"


# (4) SendTaskFailure's cause.


def test_send_task_failure_keeps_the_cause_for_catch(aws: AwsClients, uid: str) -> None:
    activity = make_activity(aws, uid)
    definition = {
        "StartAt": "Run",
        "States": {
            "Run": {
                "Type": "Task",
                "Resource": activity,
                "TimeoutSeconds": 30,
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Done"}],
                "End": True,
            },
            "Done": {"Type": "Pass", "End": True},
        },
    }
    execution = start(aws, make_machine(aws, uid, definition), {"job": "x"})
    token = take(aws, activity)["taskToken"]
    aws.sfn.send_task_failure(
        taskToken=token, error="RSQL.ScriptFailed", cause="exit code 3: ERROR: relation"
    )
    output = json.loads(wait_done(aws, execution)["output"])
    assert output == {
        "job": "x",
        "error": {"Error": "RSQL.ScriptFailed", "Cause": "exit code 3: ERROR: relation"},
    }


# (5) Dead tasks are never handed out.


def test_get_activity_task_skips_tasks_that_timed_out_or_whose_execution_stopped(
    aws: AwsClients, uid: str
) -> None:
    activity = make_activity(aws, uid)
    machine = make_machine(aws, uid, one_task(activity, TimeoutSecondsPath="$.t", End=True))
    timed_out = start(aws, machine, {"t": 1, "which": "timed out"})
    stopped = start(aws, machine, {"t": 60, "which": "stopped"})
    live = start(aws, machine, {"t": 60, "which": "live"})

    aws.sfn.stop_execution(executionArn=stopped)
    described = wait_done(aws, timed_out)  # never taken: times out in the queue
    assert (described["status"], described["error"]) == ("FAILED", "States.Timeout")

    task = take(aws, activity)
    assert json.loads(task["input"])["which"] == "live"
    aws.sfn.send_task_success(taskToken=task["taskToken"], output="{}")
    assert wait_done(aws, live)["status"] == "SUCCEEDED"


def test_when_one_map_job_fails_the_others_tokens_close_and_are_not_handed_out(
    aws: AwsClients, uid: str
) -> None:
    activity = make_activity(aws, uid)
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.jobs",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "Run",
                    "States": {
                        "Run": {
                            "Type": "Task",
                            "Resource": activity,
                            "HeartbeatSeconds": 30,
                            "TimeoutSeconds": 60,
                            "End": True,
                        }
                    },
                },
                "End": True,
            }
        },
    }
    jobs = [{"job_name": name} for name in ("a", "b", "c")]
    execution = start(aws, make_machine(aws, uid, definition), {"jobs": jobs})
    failing, running = take(aws, activity), take(aws, activity)  # the third stays queued

    aws.sfn.send_task_failure(taskToken=failing["taskToken"], error="RSQL.ScriptFailed")
    described = wait_done(aws, execution, timeout_s=5)  # at once, not at a timeout
    assert (described["status"], described["error"]) == ("FAILED", "RSQL.ScriptFailed")

    # The job still running learns at its next heartbeat that its workflow is over...
    assert error_of(aws.sfn.send_task_heartbeat, taskToken=running["taskToken"]) == (
        "TaskTimedOut",
        400,
    )
    # ...and the queued one is never handed out.
    assert "taskToken" not in aws.sfn.get_activity_task(activityArn=activity)


# Timeouts and heartbeats.


def test_heartbeats_keep_a_task_alive_past_its_heartbeat_seconds(aws: AwsClients, uid: str) -> None:
    activity = make_activity(aws, uid)
    machine = make_machine(
        aws, uid, one_task(activity, HeartbeatSeconds=1, TimeoutSeconds=20, End=True)
    )
    execution = start(aws, machine)
    token = take(aws, activity)["taskToken"]
    # Three heartbeat periods, a heartbeat every 0.3 s: the task must survive them all.
    until = time.monotonic() + 3
    while time.monotonic() < until:
        aws.sfn.send_task_heartbeat(taskToken=token)
        time.sleep(0.3)
    aws.sfn.send_task_success(taskToken=token, output='{"alive": true}')
    described = wait_done(aws, execution)
    assert described["status"] == "SUCCEEDED", described.get("error")


def test_a_heartbeat_timeout_is_retried_with_a_new_token(aws: AwsClients, uid: str) -> None:
    activity = make_activity(aws, uid)
    # The paths the workflow uses: HeartbeatSecondsPath and TimeoutSecondsPath from the input.
    task_state = {
        "HeartbeatSecondsPath": "$.heartbeat_seconds",
        "TimeoutSecondsPath": "$.timeout_seconds",
        "Retry": [{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 1, "MaxAttempts": 3}],
        "End": True,
    }
    machine = make_machine(aws, uid, one_task(activity, **task_state))
    execution = start(aws, machine, {"heartbeat_seconds": 1, "timeout_seconds": 20})

    first = take(aws, activity)  # then silence: the host "died"
    second = take(aws, activity)
    assert second["taskToken"] != first["taskToken"]
    assert second["input"] == first["input"]
    assert error_of(aws.sfn.send_task_heartbeat, taskToken=first["taskToken"])[0] == (
        "TaskTimedOut"
    )
    aws.sfn.send_task_success(taskToken=second["taskToken"], output='{"attempt": 2}')
    described = wait_done(aws, execution)
    assert json.loads(described["output"]) == {"attempt": 2}
    assert history_types(aws, execution).count("ActivityTimedOut") == 1


def test_timeout_seconds_path_fails_an_unanswered_task_with_states_timeout(
    aws: AwsClients, uid: str
) -> None:
    activity = make_activity(aws, uid)
    machine = make_machine(aws, uid, one_task(activity, TimeoutSecondsPath="$.t", End=True))
    execution = start(aws, machine, {"t": 2})
    take(aws, activity)
    started = time.monotonic()
    described = wait_done(aws, execution)
    assert (described["status"], described["error"]) == ("FAILED", "States.Timeout")
    assert time.monotonic() - started < 4


# (10) and (7): smaller gaps.


def test_executions_started_without_a_name_get_distinct_names(aws: AwsClients, uid: str) -> None:
    machine = make_machine(
        aws, uid, {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    )
    first = aws.sfn.start_execution(stateMachineArn=machine)["executionArn"]
    second = aws.sfn.start_execution(stateMachineArn=machine)["executionArn"]
    assert first != second
    assert not first.endswith(":None")


def test_each_execution_prunes_finished_threads_from_motos_list() -> None:
    """(9), in this process: moto's thread list is not visible through the API."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends
    from moto.stepfunctions.parser.utils import TMP_THREADS

    from cloud.emulator import bridge

    bridge.apply()
    backend = stepfunctions_parser_backends["123456789012"]["us-east-1"]
    machine = backend.create_state_machine(
        name=f"prune-{uuid.uuid4().hex[:8]}",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn=ROLE_ARN,
    )
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    TMP_THREADS.append(finished)
    backend.start_execution(machine.arn, name="prune")
    assert finished not in TMP_THREADS


# (11) Context object times.


def test_context_object_times_are_aws_timestamps(aws: AwsClients, uid: str) -> None:
    definition = {
        "StartAt": "Times",
        "States": {
            "Times": {
                "Type": "Pass",
                "Parameters": {
                    "started.$": "$$.Execution.StartTime",
                    "entered.$": "$$.State.EnteredTime",
                    "text.$": "States.Format('{}', $$.Execution.StartTime)",
                },
                "End": True,
            }
        },
    }
    described = wait_done(aws, start(aws, make_machine(aws, uid, definition)))
    assert described["status"] == "SUCCEEDED", described.get("cause")
    output = json.loads(described["output"])
    aws_time = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    assert all(aws_time.match(value) for value in output.values()), output
    assert output["started"] <= output["entered"]


def test_a_query_on_a_missing_index_is_a_validation_error(aws: AwsClients, uid: str) -> None:
    table = f"noindex-{uid}"
    aws.ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    query = {
        "TableName": table,
        "KeyConditionExpression": "#a = :a",
        "ExpressionAttributeNames": {"#a": "a"},
        "ExpressionAttributeValues": {":a": {"S": "x"}},
    }
    with pytest.raises(ClientError) as raised:
        aws.ddb.query(**query, IndexName="by_a")
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == "The table does not have the specified index: by_a"
    # A missing table is still ResourceNotFoundException.
    with pytest.raises(ClientError) as raised:
        aws.ddb.query(**{**query, "TableName": f"gone-{uid}"}, IndexName="by_a")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


# (18) GetExecutionHistory pages.


def test_execution_history_comes_in_pages_either_way(aws: AwsClients, uid: str) -> None:
    each = {"Type": "Pass", "End": True}
    definition = {"StartAt": "Many", "States": {"Many": inline_map(each, End=True)}}
    execution = start(aws, make_machine(aws, uid, definition), {"items": [0] * 60})
    wait_done(aws, execution)
    pages = [aws.sfn.get_execution_history(executionArn=execution)]
    while "nextToken" in pages[-1]:
        token = pages[-1]["nextToken"]
        pages.append(aws.sfn.get_execution_history(executionArn=execution, nextToken=token))
    # 100 events a page unless maxResults says otherwise; together, the whole history in order.
    assert [len(page["events"]) for page in pages[:-1]] == [100] * (len(pages) - 1)
    ids = [e["id"] for page in pages for e in page["events"]]
    total = len(ids)
    assert total > 240 and ids == list(range(1, total + 1))
    newest = aws.sfn.get_execution_history(executionArn=execution, reverseOrder=True, maxResults=3)[
        "events"
    ]
    assert [e["id"] for e in newest] == [total, total - 1, total - 2]
    assert newest[0]["type"] == "ExecutionSucceeded"
    code, status = error_of(
        aws.sfn.get_execution_history, executionArn=execution, nextToken="forged"
    )
    assert (code, status) == ("InvalidToken", 400)
