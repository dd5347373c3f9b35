"""The ASL file is data: check it renders, its graph is sound, and it keeps the state machine's
rules (docs/contracts.md): no Lambda, retries of Agent.ShuttingDown and States.Timeout, ..."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cloud.names import StackNames
from cloud.statemachine import DefinitionError, render_definition, validate

ACTIVITY = "arn:aws:states:us-east-1:123456789012:activity:teststack-jobs"
TOPIC = "arn:aws:sns:us-east-1:123456789012:teststack-notifications"


def _definition(stack: str = "teststack") -> dict[str, Any]:
    return json.loads(render_definition(StackNames(stack), ACTIVITY, TOPIC))


def _all_states(graph: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in graph["States"].items():
        yield name, state
        processor = state.get("ItemProcessor")
        if processor:
            yield from _all_states(processor)


def test_render_fills_every_placeholder_with_the_stack_names() -> None:
    text = render_definition(StackNames("teststack"), ACTIVITY, TOPIC)
    assert "${" not in text
    for name in ("teststack-config", "teststack-workflow-audit", ACTIVITY, TOPIC):
        assert name in text
    # Deterministic text lets deploy compare it with the deployed definition.
    assert text == render_definition(StackNames("teststack"), ACTIVITY, TOPIC)


def test_no_lambda_anywhere() -> None:
    for _, state in _all_states(_definition()):
        assert "lambda" not in str(state.get("Resource", "")).lower()


def test_activity_task_has_timeouts_and_retries_for_lost_hosts() -> None:
    tasks = [s for _, s in _all_states(_definition()) if s.get("Resource") == ACTIVITY]
    assert len(tasks) == 1
    task = tasks[0]
    # moto gives HeartbeatSeconds without TimeoutSeconds a hidden 60 s timeout: always set both.
    assert task["TimeoutSecondsPath"] and task["HeartbeatSecondsPath"]
    retried = {e for r in task["Retry"] for e in r["ErrorEquals"] if r["MaxAttempts"] >= 3}
    assert {"Agent.ShuttingDown", "States.Timeout"} <= retried
    assert set(task["Parameters"]) == {
        "workflow_id.$",
        "workflow_execution_id.$",
        "stage_index.$",
        "job_name.$",
        "args",
        "timeout_seconds.$",
        "heartbeat_seconds.$",
        "restart_of.$",
        "legacy_args.$",
        "variables.$",
        # For the TaskWaitTime metric (docs/metrics.md).
        "scheduled_at.$",
        "retry_count.$",
    }
    assert task["Parameters"]["scheduled_at.$"] == "$$.State.EnteredTime"
    assert task["Parameters"]["retry_count.$"] == "$$.State.RetryCount"


def test_stage_map_runs_one_stage_at_a_time_and_failures_are_caught() -> None:
    stages = _definition()["States"]["RunStages"]
    assert stages["MaxConcurrency"] == 1
    assert any("States.ALL" in c["ErrorEquals"] for c in stages["Catch"])


def _stage_states() -> dict[str, Any]:
    states: dict[str, Any] = _definition()["States"]["RunStages"]["ItemProcessor"]["States"]
    return states


def test_a_wide_or_long_stage_runs_in_child_executions_of_this_state_machine_only() -> None:
    definition = _definition()
    chunks = _stage_states()["RunChunks"]
    run_chunk = chunks["ItemProcessor"]["States"]["RunChunk"]
    assert run_chunk["Resource"] == "arn:aws:states:::states:startExecution.sync:2"
    assert run_chunk["Parameters"]["StateMachineArn.$"] == "$$.StateMachine.Id"
    child_input = run_chunk["Parameters"]["Input"]
    assert child_input["child_of.$"] == "$$.Execution.Id"
    # A child goes from its input straight to its one stage, and back out without touching
    # the run's audit row, lock or topic: those are its run's.
    states = definition["States"]
    assert states["CheckInput"]["Choices"][0] == {
        "Variable": "$.child_of",
        "IsPresent": True,
        "Next": "RunStages",
    }
    for name, child_state in (("StagesDone", "ChildDone"), ("StagesFailed", "ChildFailed")):
        assert states[name]["Choices"] == [
            {"Variable": "$.child_of", "IsPresent": True, "Next": child_state}
        ]
    assert states["RunStages"]["Next"] == "StagesDone"
    assert states["RunStages"]["Catch"][0]["Next"] == "StagesFailed"
    # The chunk's child runs it in the run, never in children of its own.
    plan = chunks["ItemSelector"]["stage"]["M"]["plan"]["M"]
    assert plan["mode"] == {"S": "inline"}


def test_the_jobs_maps_concurrency_and_chunks_come_from_the_plan() -> None:
    stage = _stage_states()
    assert stage["RunJobs"]["MaxConcurrencyPath"] == "$.plan.jobs_at_once"
    assert stage["RunChunks"]["MaxConcurrencyPath"] == "$.plan.chunks_at_once"
    assert stage["RunJobs"]["ItemsPath"] == "$.chunks[0]"
    assert stage["RunChunks"]["ItemsPath"] == "$.chunks"
    # A Map's result holds every iteration's output: they output nothing.
    run_job = stage["RunJobs"]["ItemProcessor"]["States"]["RunJob"]
    assert run_job["OutputPath"] is None
    for name in ("RunJobs", "RunChunks"):
        assert stage[name]["OutputPath"] is None and stage[name]["ResultPath"] is None


def test_every_dynamodb_task_targets_one_of_the_stack_tables() -> None:
    tables = {"teststack-config", "teststack-workflow-audit"}
    seen = set()
    for _, state in _all_states(_definition()):
        if str(state.get("Resource", "")).startswith("arn:aws:states:::dynamodb:"):
            assert state["Parameters"]["TableName"] in tables
            seen.add(state["Parameters"]["TableName"])
    assert seen == tables


def test_validate_rejects_a_dangling_next() -> None:
    broken = _definition()
    broken["States"]["MarkCompleted"]["Next"] = "NoSuchState"
    with pytest.raises(DefinitionError, match="NoSuchState"):
        validate(broken)


def test_validate_rejects_an_unreachable_state() -> None:
    broken = _definition()
    broken["States"]["Orphan"] = {"Type": "Succeed"}
    with pytest.raises(DefinitionError, match="Orphan"):
        validate(broken)


def test_validate_checks_nested_map_processors() -> None:
    broken = _definition()
    inner = broken["States"]["RunStages"]["ItemProcessor"]["States"]["RunJobs"]["ItemProcessor"]
    del inner["States"]["RunJob"]["End"]
    with pytest.raises(DefinitionError, match="RunJob"):
        validate(broken)
