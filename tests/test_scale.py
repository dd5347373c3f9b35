"""One workflow at AWS's limits, on the emulator (which enforces them): 5,000 jobs in 5 stages,
one of them 100 jobs at once, run by two agents. It takes minutes, so it is marked `scale`:
`make test` skips it, `make test-scale` runs it. It prints its figures (wall time, history
events and state transitions per job, inline and in children)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import agent_thread, write_script
from test_wide_e2e import counting_script, deploy, marks_dir, run_and_children, transitions
from test_workflow_e2e import (
    ACCOUNT_REGION,
    Deployed,
    lock_holder,
    put_workflow,
    settings_for,
    stage,
    workflow_row,
)

from cloud.aws import Aws
from cloud.cli import main as cloud_main
from cloud.config import parse_workflow
from cloud.plan import CHILDREN, INLINE, plan_workflow, run_history_events
from cloud.quotas import MAX_HISTORY_EVENTS
from cloud.reports import job_rows
from cloud.stack import Stack

pytestmark = [pytest.mark.scale, pytest.mark.usefixtures("emulator"), pytest.mark.timeout(3600)]

JOBS_PER_STAGE = 1000
WIDE_STAGE = 1
WIDE_MAX_PARALLEL = 100


@pytest.fixture
def deployed(uid: str, capsys: pytest.CaptureFixture[str]) -> Deployed:
    stack = deploy(f"scale{uid}")
    capsys.readouterr()
    return stack


def wait_for_run(aws: Any, arn: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        described: dict[str, Any] = aws.sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        assert time.monotonic() < deadline, f"still running after {timeout_s} s"
        time.sleep(2)


def test_5000_jobs_in_5_stages_one_100_wide(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marks = marks_dir(tmp_path)
    hosts = [
        settings_for(
            deployed, tmp_path / f"host{n}", concurrency=60, pollers=6, worker_name=f"h{n}"
        )
        for n in (1, 2)
    ]
    stages = []
    for index in range(5):
        jobs = [f"s{index}_{n:04d}.sh" for n in range(JOBS_PER_STAGE)]
        # The wide stage's jobs last long enough for 100 to overlap: the emulator serves a few
        # dozen jobs a second on 2 busy cores.
        for host in hosts:
            for name in jobs:
                body = counting_script(marks, name, 15) if index == WIDE_STAGE else "true"
                write_script(host.script_dir, name, body)
        max_parallel = WIDE_MAX_PARALLEL if index == WIDE_STAGE else 20
        stages.append(stage(jobs, "parallel", max_parallel=max_parallel))
    config = {"workflow_id": "wf-scale", "workflow_stages": stages}
    workflow = parse_workflow(config)
    plans = plan_workflow(workflow)
    # The wide stage runs in children for its width; two more for the run's history (all five
    # inline would write ~35,000 events).
    assert plans[WIDE_STAGE].mode == CHILDREN and plans[WIDE_STAGE].at_once == 100
    assert [p.mode for p in plans].count(INLINE) == 2
    put_workflow(deployed, tmp_path, config)

    started = time.monotonic()
    with agent_thread(hosts[0]), agent_thread(hosts[1]):
        assert cloud_main(["workflow", "start", "wf-scale", "--execution-id", "scale-1",
                           *deployed.stack_args]) == 0  # fmt: skip
        arn = f"arn:aws:states:{ACCOUNT_REGION}:execution:{deployed.names.state_machine}:scale-1"
        described = wait_for_run(aws, arn, timeout_s=3000)
    wall_s = time.monotonic() - started
    capsys.readouterr()
    assert described["status"] == "SUCCEEDED", described

    stack = Stack(Aws(), deployed.names)
    rows = job_rows(stack, workflow.job_names, "scale-1")
    statuses = {row["execution_status"] for row in rows.values()}
    assert len(rows) == 5 * JOBS_PER_STAGE and statuses == {"Completed"}
    seen = [int(n) for n in (marks / "seen").read_text().split()]
    assert len(seen) == JOBS_PER_STAGE
    assert 40 < max(seen) <= WIDE_MAX_PARALLEL, f"at most {max(seen)} at once"
    assert workflow_row(aws, deployed, "scale-1", "wf-scale")["execution_status"] == "Completed"
    assert lock_holder(aws, deployed, "wf-scale") is None

    run, children = run_and_children(aws, deployed, "scale-1")
    assert len(run) == run_history_events(workflow, plans) < MAX_HISTORY_EVENTS
    assert all(len(child) < MAX_HISTORY_EVENTS for child in children)
    child_jobs = sum(p.jobs for p in plans if p.mode == CHILDREN)
    figures = {
        "wall_s": round(wall_s),
        "jobs": 5 * JOBS_PER_STAGE,
        "max_at_once_in_the_wide_stage": max(seen),
        "run_history_events": len(run),
        "child_executions": len(children),
        "largest_child_history_events": max(len(c) for c in children),
        "transitions_in_the_run": transitions(run),
        "transitions_per_job_in_children": round(
            sum(transitions(c) for c in children) / child_jobs, 3
        ),
    }
    print("\n" + json.dumps(figures))
