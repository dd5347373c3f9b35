"""AWS's limits in the emulator (cloud/emulator/patches_limits.py, lettered as in the list in
cloud/emulator/bridge.py), driven through boto3 against the running emulator: moto enforces
none of them, so each test here fails on a bare moto."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import POLL_WAIT_S, AwsClients
from sfn_helpers import (
    error_of,
    inline_map,
    make_activity,
    make_machine,
    start,
    take,
    wait_done,
)

from cloud.quotas import HISTORY_LIMIT_CAUSE, MAX_HISTORY_EVENTS, MAX_PAYLOAD_BYTES


def _last_events(aws: AwsClients, execution: str) -> list[dict[str, Any]]:
    """The last two events, newest first (ids count from 1: the newest id is the length)."""
    answer = aws.sfn.get_execution_history(executionArn=execution, reverseOrder=True, maxResults=2)
    events: list[dict[str, Any]] = answer["events"]
    return events


# (a) Inline Map concurrency.


@pytest.mark.parametrize("max_concurrency", [0, 50])
def test_an_inline_map_runs_at_most_40_iterations_at_once(
    aws: AwsClients, uid: str, max_concurrency: int
) -> None:
    activity = make_activity(aws, uid)
    task = {"Type": "Task", "Resource": activity, "TimeoutSeconds": 60, "End": True}
    definition = {
        "StartAt": "Wide",
        "States": {"Wide": inline_map(task, MaxConcurrency=max_concurrency, End=True)},
    }
    execution = start(aws, make_machine(aws, uid, definition), {"items": list(range(60))})
    try:
        tokens = [take(aws, activity)["taskToken"] for _ in range(40)]
        # A 41st task is only scheduled when one of the 40 ends.
        assert "taskToken" not in aws.sfn.get_activity_task(activityArn=activity)
        aws.sfn.send_task_success(taskToken=tokens[0], output="{}")
        assert take(aws, activity, timeout_s=POLL_WAIT_S + 5)["taskToken"]
    finally:
        aws.sfn.stop_execution(executionArn=execution)


# (b) History.


def _pass_map_machine(aws: AwsClients, uid: str, max_concurrency: int = 0) -> str:
    # ExecutionStarted, Pass entered/exited, Map entered/started, 4 per item (iteration
    # started/succeeded, Pass entered/exited), Map succeeded/exited, ExecutionSucceeded:
    # 8 + 4 x items events.
    definition = {
        "StartAt": "Items",
        "States": {
            "Items": {"Type": "Pass", "Next": "Many"},
            "Many": inline_map(
                {"Type": "Pass", "End": True},
                MaxConcurrency=max_concurrency,
                ResultPath=None,
                End=True,
            ),
        },
    }
    return make_machine(aws, uid, definition)


def _items(count: int) -> dict[str, list[int]]:
    return {"items": [0] * count}


@pytest.mark.timeout(600)
def test_an_execution_whose_event_25000_is_its_end_succeeds(aws: AwsClients, uid: str) -> None:
    machine = _pass_map_machine(aws, uid)
    execution = start(aws, machine, _items((MAX_HISTORY_EVENTS - 8) // 4))
    described = wait_done(aws, execution, timeout_s=540)
    last, before = _last_events(aws, execution)
    assert described["status"] == "SUCCEEDED"
    assert (last["id"], last["type"]) == (MAX_HISTORY_EVENTS, "ExecutionSucceeded")
    assert before["type"] == "MapStateExited"


@pytest.mark.timeout(600)
def test_an_execution_fails_at_25000_history_events_as_on_aws(aws: AwsClients, uid: str) -> None:
    machine = _pass_map_machine(aws, uid)
    execution = start(aws, machine, _items((MAX_HISTORY_EVENTS - 8) // 4 + 1))
    described = wait_done(aws, execution, timeout_s=540)
    last, before = _last_events(aws, execution)
    assert (described["status"], described["error"], described["cause"]) == (
        "FAILED",
        "States.Runtime",
        "The execution reached the maximum number of history events (25000).",
    )
    assert described["cause"] == HISTORY_LIMIT_CAUSE
    # Event 25,000 is the failure; nothing follows it (the Map's end would have).
    assert (last["id"], last["type"]) == (MAX_HISTORY_EVENTS, "ExecutionFailed")
    assert last["executionFailedEventDetails"]["error"] == "States.Runtime"
    assert before["id"] == MAX_HISTORY_EVENTS - 1 and before["type"] != "ExecutionFailed"


# (c) Payloads.


def _padded_echo(aws: AwsClients, uid: str, pad: str) -> str:
    # Output {"a":"<s>","b":"<pad>"}: 17 bytes besides the two strings.
    definition = {
        "StartAt": "Echo",
        "States": {"Echo": {"Type": "Pass", "Parameters": {"a.$": "$.s", "b": pad}, "End": True}},
    }
    return make_machine(aws, uid, definition)


def test_a_state_output_of_262144_bytes_passes_and_one_byte_more_fails(
    aws: AwsClients, uid: str
) -> None:
    text = {"s": "x" * (MAX_PAYLOAD_BYTES - 17)}
    exact = start(aws, _padded_echo(aws, uid, "xy"), text)
    assert wait_done(aws, exact)["status"] == "SUCCEEDED"
    over = start(aws, _padded_echo(aws, f"{uid}b", "xyz"), text)
    described = wait_done(aws, over)
    assert (described["status"], described["error"]) == ("FAILED", "States.DataLimitExceeded")


def _big_task_input(aws: AwsClients, uid: str, catch: list[str]) -> str:
    activity = make_activity(aws, uid)
    definition = {
        "StartAt": "Run",
        "States": {
            "Run": {
                "Type": "Task",
                "Resource": activity,
                "Parameters": {"a.$": "$.s", "b.$": "$.s"},
                "TimeoutSeconds": 30,
                "Catch": [{"ErrorEquals": catch, "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "Result": "caught", "End": True},
        },
    }
    return make_machine(aws, uid, definition)


def test_a_task_input_over_the_limit_fails_and_states_all_does_not_catch_it(
    aws: AwsClients, uid: str
) -> None:
    half = "x" * (MAX_PAYLOAD_BYTES // 2)
    execution = start(aws, _big_task_input(aws, uid, ["States.ALL"]), {"s": half})
    described = wait_done(aws, execution)
    assert (described["status"], described["error"]) == ("FAILED", "States.DataLimitExceeded")
    # Only a catcher that names it catches it.
    named = _big_task_input(aws, f"{uid}n", ["States.DataLimitExceeded"])
    described = wait_done(aws, start(aws, named, {"s": half}))
    assert described["status"] == "SUCCEEDED"
    assert "Caught" in str(aws.sfn.get_execution_history(executionArn=described["executionArn"]))


def test_start_execution_refuses_an_input_over_the_limit(aws: AwsClients, uid: str) -> None:
    machine = _padded_echo(aws, uid, "")
    too_big = json.dumps({"s": "x" * MAX_PAYLOAD_BYTES})
    code, status = error_of(aws.sfn.start_execution, stateMachineArn=machine, input=too_big)
    assert (code, status) == ("ValidationException", 400)


# (12) Map workers.


def test_a_sequential_map_of_1200_items_runs_to_its_end(aws: AwsClients, uid: str) -> None:
    # moto's worker recursed once per item and died of RecursionError near 1,000.
    execution = start(aws, _pass_map_machine(aws, uid, max_concurrency=1), _items(1200))
    described = wait_done(aws, execution, timeout_s=60)
    assert described["status"] == "SUCCEEDED"
