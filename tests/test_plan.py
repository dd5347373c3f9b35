"""How each stage runs (cloud/plan.py) and what a workflow asks of AWS's limits
(cloud/sizing.py): no AWS calls. tests/test_wide_e2e.py checks the history figures against
real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloud.cli import main as cloud_main
from cloud.config import ConfigError, Workflow, parse_workflow
from cloud.plan import (
    CHILDREN,
    HISTORY_BUDGET,
    INLINE,
    MAX_CHUNK_JOBS,
    MAX_STAGE_AT_ONCE,
    plan_workflow,
    run_history_events,
    split_width,
)
from cloud.quotas import MAX_HISTORY_EVENTS, MAX_PAYLOAD_BYTES
from cloud.sizing import size_report


def stage(jobs: list[str], kind: str = "parallel", **extra: Any) -> dict[str, Any]:
    return {"execution_flag": "y", "execution_type": kind, "scripts": jobs, **extra}


def workflow(*stages: dict[str, Any], within_limits: bool = True) -> Workflow:
    data = {"workflow_id": "wf", "workflow_stages": list(stages)}
    return parse_workflow(data, within_limits=within_limits)


def names(prefix: str, count: int, width: int = 0) -> list[str]:
    return [f"{prefix}{'x' * width}{i:05d}.sh" for i in range(count)]


@pytest.mark.parametrize(
    ("width", "expected"),
    [(1, (1, 1)), (40, (1, 40)), (41, (2, 20)), (50, (2, 25)), (100, (4, 25)), (1600, (40, 40))],
)
def test_a_width_splits_into_children_of_at_most_40_never_above_it(
    width: int, expected: tuple[int, int]
) -> None:
    lanes, per_lane = split_width(width)
    assert (lanes, per_lane) == expected
    assert lanes <= 40 and per_lane <= 40 and lanes * per_lane <= width


def test_small_stages_run_in_the_run_itself() -> None:
    plans = plan_workflow(
        workflow(stage(["a.sh", "b.sh"], "sequential"), stage(names("p", 40), max_parallel=0))
    )
    assert [(p.mode, p.jobs_at_once, p.chunk_size) for p in plans] == [
        (INLINE, 1, 2),
        (INLINE, 40, 40),
    ]


@pytest.mark.parametrize(("max_parallel", "at_once"), [(0, 60), (50, 50), (100, 60)])
def test_a_stage_wider_than_40_runs_in_children(max_parallel: int, at_once: int) -> None:
    (plan,) = plan_workflow(workflow(stage(names("w", 60), max_parallel=max_parallel)))
    assert plan.mode == CHILDREN
    assert plan.at_once == at_once
    assert plan.jobs_at_once <= 40 and plan.chunks_at_once <= 40


def test_a_workflow_too_long_for_one_history_moves_its_largest_stages_to_children() -> None:
    stages = [stage(names(f"s{i}_", 1000), "sequential") for i in range(5)]
    wf = workflow(*stages)
    plans = plan_workflow(wf)
    assert MAX_HISTORY_EVENTS < 5 * 1000 * 7  # all inline would fail on AWS
    assert [p.mode for p in plans].count(CHILDREN) == 3
    assert run_history_events(wf, plans) <= HISTORY_BUDGET
    # A sequential stage in children keeps its order: one child, one job at a time.
    moved = [p for p in plans if p.mode == CHILDREN]
    assert all((p.chunks_at_once, p.jobs_at_once, p.at_once) == (1, 1, 1) for p in moved)


def test_a_child_holds_what_its_history_and_input_allow() -> None:
    (plan,) = plan_workflow(workflow(stage(names("s", 6000), "sequential")))
    assert plan.mode == CHILDREN and plan.chunk_size == MAX_CHUNK_JOBS and plan.chunks == 3
    jobs = names("long", 2000, width=200)
    (plan,) = plan_workflow(workflow(stage(jobs, max_parallel=41), within_limits=False))
    # A chunk's names in a child's input stay within 128 KB: {"S":"<name>"}, each.
    assert plan.mode == CHILDREN
    entry = json.dumps({"S": jobs[0]}, separators=(",", ":")) + ","
    assert plan.chunk_size == 128 * 1024 // len(entry)


def test_the_report_has_the_figures_against_the_limits() -> None:
    wf = workflow(*[stage(names(f"s{i}_", 1000), "sequential") for i in range(4)])
    report = size_report(wf)
    assert report.jobs == 4000 and report.problems == []
    assert report.run_events == run_history_events(wf, report.plans) <= HISTORY_BUDGET
    assert 0 < report.child_events <= HISTORY_BUDGET
    assert report.largest_payload_bytes < MAX_PAYLOAD_BYTES


def test_names_that_do_not_fit_one_state_are_refused_with_the_fix() -> None:
    data = {"workflow_id": "wf", "workflow_stages": [stage(names("n", 1500, width=200))]}
    with pytest.raises(ConfigError) as refused:
        parse_workflow(data)
    (problem,) = refused.value.problems
    assert "do not fit one Step Functions state" in problem
    assert "shorten the job names or split the workflow into two workflows" in problem


def test_a_max_parallel_above_1600_is_refused_and_0_is_capped_with_a_note() -> None:
    data = {"workflow_id": "wf", "workflow_stages": [stage(names("n", 2000), max_parallel=2000)]}
    with pytest.raises(ConfigError, match=r"max_parallel: at most 1600 .* set it to 1600"):
        parse_workflow(data)
    report = size_report(workflow(stage(names("n", 2000), max_parallel=0)))
    assert report.problems == []
    assert report.plans[0].at_once == MAX_STAGE_AT_ONCE
    assert any("it runs 1600 at once" in note for note in report.notes)


def test_validate_prints_the_figures_and_refuses_what_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"workflow_id": "wf", "workflow_stages": [stage(names("w", 60))]}))
    assert cloud_main(["workflow", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "widest stage     stage 1: 60 jobs at once" in out
    assert "history events   ~" in out and "of 25,000 per execution" in out
    assert "largest state" in out and "of 256.0 KB" in out
    assert "60 jobs in 2 child executions of up to 30, 60 at once (2 children x 30)" in out

    too_big = {"workflow_id": "wf", "workflow_stages": [stage(names("n", 1500, width=200))]}
    path.write_text(json.dumps(too_big))
    assert cloud_main(["workflow", "validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert "workflow wf (1 stages, 1500 jobs)" in captured.out
    assert "do not fit one Step Functions state" in captured.err
