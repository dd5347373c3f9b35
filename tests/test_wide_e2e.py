"""Stages wider than an inline Map allows (40 at once) run in child executions of the state
machine itself: the whole product against the emulator, which enforces AWS's limits. Also the
cost of either path, in state transitions per job, from the executions' histories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import agent_thread, write_script
from test_workflow_e2e import (  # the e2e tests' helpers
    ACCOUNT_REGION,
    Deployed,
    job_row,
    lock_holder,
    put_workflow,
    settings_for,
    stage,
    start_and_wait,
    workflow_row,
)

from cloud.cli import main as cloud_main
from cloud.config import parse_workflow
from cloud.names import StackNames
from cloud.plan import (
    EVENTS_PER_INLINE_JOB,
    EVENTS_PER_RUN,
    EVENTS_PER_STAGE,
    EVENTS_TO_INHERIT_LEGACY_ARGS,
    child_history_events,
    plan_workflow,
    run_history_events,
)

pytestmark = pytest.mark.usefixtures("emulator")


def deploy(stack_name: str) -> Deployed:
    names = StackNames(stack_name)
    assert cloud_main(["deploy", "--stack-name", names.stack_name]) == 0
    return Deployed(names, f"arn:aws:states:{ACCOUNT_REGION}:activity:{names.activity}")


@pytest.fixture
def deployed(uid: str, capsys: pytest.CaptureFixture[str]) -> Deployed:
    stack = deploy(f"wide{uid}")
    capsys.readouterr()
    return stack


def marks_dir(tmp_path: Path) -> Path:
    """Where `counting_script`s keep their count."""
    marks = tmp_path / "marks"
    (marks / "running").mkdir(parents=True)
    return marks


def counting_script(marks: Path, name: str, sleep_s: float, exit_code: int = 0) -> str:
    """Records how many jobs run beside it (under a lock, so the count is exact)."""
    running = marks / "running"
    return f"""
        exec 9>{marks}/lock
        flock 9; touch {running}/{name}; ls {running} | wc -l >> {marks}/seen; flock -u 9
        sleep {sleep_s}
        flock 9; rm {running}/{name}; flock -u 9
        exit {exit_code}
        """


def histories(aws: Any, arn: str) -> list[dict[str, Any]]:
    pages = aws.sfn.get_paginator("get_execution_history")
    return [e for page in pages.paginate(executionArn=arn) for e in page["events"]]


def transitions(events: list[dict[str, Any]]) -> int:
    """State transitions as Step Functions bills them: one per state entered."""
    return sum(1 for e in events if e["type"].endswith("StateEntered"))


def run_and_children(aws: Any, deployed: Deployed, name: str) -> tuple[list[Any], list[Any]]:
    run_arn = f"arn:aws:states:us-east-1:123456789012:execution:{deployed.names.state_machine}"
    run = histories(aws, f"{run_arn}:{name}")
    children = []
    for event in run:
        details = event.get("taskSubmittedEventDetails")
        if details:
            children.append(histories(aws, json.loads(details["output"])["ExecutionArn"]))
    return run, children


def test_a_stage_wider_than_40_runs_in_child_executions_up_to_its_max_parallel(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(deployed, tmp_path, concurrency=60, pollers=4)
    marks = marks_dir(tmp_path)
    wide = [f"w{i:02d}.sh" for i in range(80)]
    for name in wide:
        write_script(settings.script_dir, name, counting_script(marks, name, sleep_s=4))
    for name in ("first.sh", "last.sh"):
        write_script(settings.script_dir, name, "true")
    config = {
        "workflow_id": "wf-wide",
        "workflow_stages": [
            stage(["first.sh"]),
            stage(wide, "parallel", max_parallel=50),
            stage(["last.sh"]),
        ],
    }
    workflow = parse_workflow(config)
    plans = plan_workflow(workflow)
    # 2 children of 40 jobs at once, 25 jobs at once in each: 50.
    assert [p.mode for p in plans] == ["inline", "children", "inline"]
    assert (plans[1].chunks, plans[1].chunks_at_once, plans[1].jobs_at_once) == (2, 2, 25)
    put_workflow(deployed, tmp_path, config)
    put_said = capsys.readouterr().out
    assert "stage 2: parallel, 80 jobs in 2 child executions of up to 40, 50 at once" in put_said
    with agent_thread(settings):
        assert start_and_wait(deployed, "wf-wide", "wide-run-1") == 0
    progress = capsys.readouterr().out
    assert all(f"{name}: Completed" in progress for name in wide)

    seen = [int(n) for n in (marks / "seen").read_text().split()]
    assert len(seen) == 80
    assert 40 < max(seen) <= 50, f"at most {max(seen)} jobs at once"
    for name in ["first.sh", *wide, "last.sh"]:
        assert job_row(aws, deployed, name, "wide-run-1")["execution_status"] == "Completed"
    row = workflow_row(aws, deployed, "wide-run-1", "wf-wide")
    assert row["execution_status"] == "Completed"
    assert row["rsql_jobs"] == workflow.job_names
    assert lock_holder(aws, deployed, "wf-wide") is None

    run, children = run_and_children(aws, deployed, "wide-run-1")
    assert len(children) == 2
    # Only the inline stages' jobs are in the run's own history; each child has its 40 jobs.
    assert sum(e["type"] == "ActivityScheduled" for e in run) == 2
    assert [sum(e["type"] == "ActivityScheduled" for e in c) for c in children] == [40, 40]
    # The plan's history figures are those of a real run.
    assert len(run) == run_history_events(workflow, plans)
    assert [len(child) for child in children] == [child_history_events(plans[1])] * 2

    # In children: one transition per job, plus each child's own 10 (2 Choices and 1 Pass of
    # its own, its stage's 7) and 1 in the run.
    per_child = transitions(children[0]) - 40
    assert per_child == 10
    print(f"\nwide stage: {transitions(run)} transitions in the run, {per_child} per child")

    assert cloud_main(["workflow", "status", "wide-run-1", *deployed.stack_args]) == 0
    status = capsys.readouterr().out
    assert "Children    2 child executions: 2 SUCCEEDED" in status
    assert status.count("Completed") >= 82


def test_a_job_failing_in_a_child_fails_the_run_and_a_restart_skips_what_completed(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(deployed, tmp_path, concurrency=50, pollers=4)
    quick = [f"q{i:02d}.sh" for i in range(22)]
    slow = [f"s{i:02d}.sh" for i in range(22)]
    for name in quick:
        write_script(settings.script_dir, name, "true")
    for name in slow:
        write_script(settings.script_dir, name, "sleep 30")
    write_script(
        settings.script_dir, "bad.sh", "sleep 1\necho 'relation does not exist' >&2\nexit 3"
    )
    # 45 jobs, all at once: 3 children of 15 at once.
    jobs = [*quick, "bad.sh", *slow]
    config = {"workflow_id": "wf-wide-fail", "workflow_stages": [stage(jobs, "parallel")]}
    put_workflow(deployed, tmp_path, config)
    with agent_thread(settings):
        assert start_and_wait(deployed, "wf-wide-fail", "wide-fail-1") == 1
    assert "error: RSQL.ScriptFailed" in capsys.readouterr().err
    # The run records the failed job's own error and cause, not its child's.
    row = workflow_row(aws, deployed, "wide-fail-1", "wf-wide-fail")
    assert (row["execution_status"], row["error"]) == ("Failed", "RSQL.ScriptFailed")
    assert "relation does not exist" in row["cause"]
    assert lock_holder(aws, deployed, "wf-wide-fail") is None
    # Its children, in job order: q00-q14's SUCCEEDED, the one with bad.sh FAILED, and the
    # slow jobs' was stopped with the run.
    assert cloud_main(["workflow", "status", "wide-fail-1", "--json", *deployed.stack_args]) == 0
    children = json.loads(capsys.readouterr().out)["child_executions"]
    by_first_job = {c["jobs"][0]: c for c in sorted(children, key=lambda c: c["jobs"][0])}
    assert [c["status"] for c in by_first_job.values()] == ["SUCCEEDED", "FAILED", "ABORTED"]
    assert by_first_job["q15.sh"]["error"] == "RSQL.ScriptFailed"
    assert sum(len(c["jobs"]) for c in children) == 45

    write_script(settings.script_dir, "bad.sh", "true")
    for name in slow:
        write_script(settings.script_dir, name, "true")
    with agent_thread(settings):
        code = cloud_main(
            [
                "workflow", "start", "wf-wide-fail", "--execution-id", "wide-fail-2",
                "--restart-of", "wide-fail-1", "--wait", "--timeout", "60", *deployed.stack_args,
            ]
        )  # fmt: skip
    capsys.readouterr()
    assert code == 0
    for name in quick:  # completed in the failed run
        assert job_row(aws, deployed, name, "wide-fail-2")["execution_status"] == "Skipped"
    for name in ["bad.sh", *slow]:
        assert job_row(aws, deployed, name, "wide-fail-2")["execution_status"] == "Completed"


def test_the_inline_path_costs_one_transition_per_job(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(deployed, tmp_path, concurrency=8)
    jobs = [f"i{i:02d}.sh" for i in range(30)]
    for name in jobs:
        write_script(settings.script_dir, name, "true")
    stages = [stage(jobs, "parallel", max_parallel=8)]
    config = {"workflow_id": "wf-inline", "workflow_stages": stages}
    workflow = parse_workflow(config)
    put_workflow(deployed, tmp_path, config)
    with agent_thread(settings):
        assert start_and_wait(deployed, "wf-inline", "inline-run-1") == 0
    capsys.readouterr()
    run, children = run_and_children(aws, deployed, "inline-run-1")
    assert children == []
    run_jobs = sum(e["type"] == "TaskStateEntered" and "RunJob" in str(e) for e in run)
    assert run_jobs == 30
    # Inline: one transition per job; the run's own states (input, config, audit row, lock,
    # end, notify: 13) and its stage's (4 Choices, 2 Passes, its Map: 7) are a fixed 20.
    overhead = transitions(run) - 30
    assert overhead == 20
    assert len(run) == run_history_events(workflow, plan_workflow(workflow))
    stage_events = EVENTS_PER_STAGE + EVENTS_TO_INHERIT_LEGACY_ARGS
    assert len(run) == EVENTS_PER_RUN + stage_events + 30 * EVENTS_PER_INLINE_JOB
    print(f"\ninline stage: {transitions(run)} transitions for 30 jobs ({overhead} the run's own)")


def test_an_item_put_before_plans_runs_its_stages_in_the_run_as_it_did(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(deployed, tmp_path, concurrency=4)
    marks = marks_dir(tmp_path)
    sequential = ["a.sh", "b.sh"]
    parallel = [f"p{i}.sh" for i in range(4)]
    for name in sequential + parallel:
        write_script(settings.script_dir, name, counting_script(marks, name, sleep_s=0.5))
    config = {
        "workflow_id": "wf-old",
        "workflow_stages": [stage(sequential), stage(parallel, "parallel", max_parallel=2)],
    }
    put_workflow(deployed, tmp_path, config)
    aws.ddb.update_item(
        TableName=deployed.names.config_table,
        Key={"workflow_id": {"S": "wf-old"}},
        UpdateExpression="REMOVE workflow_stages[0].#plan, workflow_stages[1].#plan",
        ExpressionAttributeNames={"#plan": "plan"},
    )
    with agent_thread(settings):
        assert start_and_wait(deployed, "wf-old", "old-run-1") == 0
    capsys.readouterr()
    for name in sequential + parallel:
        assert job_row(aws, deployed, name, "old-run-1")["execution_status"] == "Completed"
    seen = [int(n) for n in (marks / "seen").read_text().split()]
    assert seen[:2] == [1, 1] and max(seen) <= 2  # one at a time, then max_parallel
    run, children = run_and_children(aws, deployed, "old-run-1")
    assert children == []
    assert any(
        e.get("stateEnteredEventDetails", {}).get("name") == "DefaultParallelPlan" for e in run
    )
