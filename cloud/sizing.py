"""What one workflow asks of Step Functions and DynamoDB, against their limits
(`cloud/quotas.py`): `workflow validate` prints it, and a workflow that cannot run is refused
with the reason and the fix (`Workflow` validation calls `problems`).

The payloads are the states the state machine will hold (`cloud/workflow.asl.json`), built
here from the workflow and measured as Step Functions measures them: UTF-8 JSON text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from agent import items
from agent.schema import Config as C
from cloud.plan import (
    CHILDREN,
    HISTORY_BUDGET,
    MAX_STAGE_AT_ONCE,
    StagePlan,
    child_history_events,
    plan_workflow,
    run_history_events,
    wanted_at_once,
)
from cloud.quotas import (
    INLINE_MAP_MAX_CONCURRENCY,
    MAX_HISTORY_EVENTS,
    MAX_ITEM_BYTES,
    MAX_PAYLOAD_BYTES,
)

if TYPE_CHECKING:
    from cloud.config import Workflow

# The longest execution name; a failure's error and cause (the agent's cause is at most 32,768
# characters) ride along in the state from the failure on.
_LONGEST_NAME: Final = "x" * 80
_FAILURE: Final = {"Error": "x" * 64, "Cause": "x" * 32_768}
_EXECUTION_ARN: Final = "arn:aws:states:xx-xxxx-1:123456789012:execution:" + "x" * 120
_SPLIT_FIX: Final = "shorten the job names or split the workflow into two workflows"


@dataclass(frozen=True)
class SizeReport:
    """The figures `workflow validate` prints, and what makes the workflow unable to run."""

    jobs: int
    plans: list[StagePlan]
    widest_stage: int  # index into the stages; -1 when every stage is disabled
    run_events: int
    child_events: int
    largest_payload_bytes: int
    largest_payload_where: str
    item_bytes: int  # the larger of the config item and a failed run's workflow audit row
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def size_report(workflow: Workflow) -> SizeReport:
    """Plan the workflow and measure it against the limits."""
    plans = plan_workflow(workflow)
    item = workflow.to_item()
    payloads = _payloads(workflow, plans, item)
    where, largest = max(payloads.items(), key=lambda pair: pair[1])
    enabled = [i for i, s in enumerate(workflow.workflow_stages) if s.enabled]
    widest = max(enabled, key=lambda i: plans[i].at_once, default=-1)
    report = SizeReport(
        jobs=len(workflow.job_names),
        plans=plans,
        widest_stage=widest,
        run_events=run_history_events(workflow, plans),
        child_events=max((child_history_events(p) for p in plans), default=0),
        largest_payload_bytes=largest,
        largest_payload_where=where,
        item_bytes=max(item_bytes(item), item_bytes(_audit_row(workflow, failed=True))),
    )
    report.problems.extend(_problems(workflow, report))
    report.notes.extend(_notes(workflow, report))
    return report


def problems(workflow: Workflow) -> list[str]:
    """Why the workflow cannot run, each with its fix; empty when it can."""
    return size_report(workflow).problems


def _problems(workflow: Workflow, report: SizeReport) -> list[str]:
    found = []
    for index, stage in enumerate(workflow.workflow_stages):
        if stage.max_parallel > MAX_STAGE_AT_ONCE:
            found.append(
                f"workflow_stages[{index}].max_parallel: at most {MAX_STAGE_AT_ONCE} jobs of a "
                f"stage run at once (40 child executions of 40 jobs), got {stage.max_parallel}: "
                f"set it to {MAX_STAGE_AT_ONCE} or less"
            )
    if report.largest_payload_bytes > MAX_PAYLOAD_BYTES:
        found.append(
            f"the job names do not fit one Step Functions state: {report.largest_payload_where} "
            f"would hold {_kb(report.largest_payload_bytes)} of JSON, above the "
            f"{_kb(MAX_PAYLOAD_BYTES)} a state may hold: {_SPLIT_FIX}"
        )
    if report.item_bytes > MAX_ITEM_BYTES:
        found.append(
            f"the config item or a run's workflow audit row would be {_kb(report.item_bytes)}, "
            f"above DynamoDB's {_kb(MAX_ITEM_BYTES)} per item: {_SPLIT_FIX}"
        )
    if report.run_events > MAX_HISTORY_EVENTS:
        found.append(
            f"the run would write about {report.run_events} history events even with every "
            f"stage in child executions, above the {MAX_HISTORY_EVENTS} of one execution: "
            "split the workflow into two workflows"
        )
    return found


def _notes(workflow: Workflow, report: SizeReport) -> list[str]:
    found = []
    if HISTORY_BUDGET < report.run_events <= MAX_HISTORY_EVENTS:
        found.append(
            f"the run writes about {report.run_events} of its {MAX_HISTORY_EVENTS} history "
            "events: little room is left for retries"
        )
    for index, stage in enumerate(workflow.workflow_stages):
        if wanted_at_once(stage) > MAX_STAGE_AT_ONCE:
            found.append(
                f"workflow_stages[{index}]: max_parallel 0 asks for all {len(stage.scripts)} "
                f"jobs at once; it runs {MAX_STAGE_AT_ONCE} at once"
            )
    return found


def report_lines(workflow: Workflow, report: SizeReport) -> list[str]:
    """What `workflow validate` prints: the figures against the limits, then each stage's plan."""
    if report.widest_stage < 0:
        widest = "every stage is disabled"
    else:
        plan = report.plans[report.widest_stage]
        widest = f"stage {report.widest_stage + 1}: {plan.at_once} jobs at once"
    child = f", at most ~{report.child_events:,} in a child" if report.child_events else ""
    lines = [
        f"  widest stage     {widest} (limits: {INLINE_MAP_MAX_CONCURRENCY} in the run, "
        f"{MAX_STAGE_AT_ONCE:,} in child executions)",
        f"  history events   ~{report.run_events:,} in the run{child}, of "
        f"{MAX_HISTORY_EVENTS:,} per execution (a retry adds 3)",
        f"  largest state    {_kb(report.largest_payload_bytes)} of {_kb(MAX_PAYLOAD_BYTES)} "
        f"({report.largest_payload_where})",
        f"  largest item     {_kb(report.item_bytes)} of {_kb(MAX_ITEM_BYTES)} (config item, "
        "workflow audit row)",
    ]
    for index, (stage, plan) in enumerate(zip(workflow.workflow_stages, report.plans, strict=True)):
        kind = stage.execution_type if stage.enabled else f"{stage.execution_type}, disabled"
        lines.append(f"  stage {index + 1:<10} {describe_plan(kind, plan)}")
    return lines


def describe_plan(stage_kind: str, plan: StagePlan) -> str:
    """One stage's plan in words: `inline, 25 at once` / `4 children of 250 jobs, ...`."""
    jobs = _count(plan.jobs, "job")
    if plan.mode != CHILDREN:
        how = "one at a time" if plan.at_once == 1 else f"{plan.at_once} at once"
        return f"{stage_kind}, {jobs} in the run, {how}"
    where = f"in {_count(plan.chunks, 'child execution')} of up to {plan.chunk_size}"
    if plan.at_once == 1:
        return f"{stage_kind}, {jobs} {where}, one at a time"
    lanes = min(plan.chunks_at_once, plan.chunks)
    return (
        f"{stage_kind}, {jobs} {where}, {plan.at_once} at once "
        f"({lanes} {'child' if lanes == 1 else 'children'} x {plan.jobs_at_once})"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- the states the state machine will hold -----------------------------------------------------


def _payloads(workflow: Workflow, plans: list[StagePlan], item: dict[str, Any]) -> dict[str, int]:
    run = {
        "workflow_id": workflow.workflow_id,
        "restart_of": _LONGEST_NAME,
        "workflow_execution_id": _LONGEST_NAME,
        "stage_offset": 0,
    }
    projected = {k: item[k] for k in (C.WORKFLOW_ID, C.WORKFLOW_STAGES, C.HEARTBEAT_SECONDS)}
    loaded = {**run, "config": {"Item": projected}, "error": _FAILURE}
    record_start = {"TableName": "x" * 255, "Item": _audit_row(workflow, failed=False)}
    sizes = {
        "the run's state from LoadConfig on": payload_bytes(loaded),
        "RecordStart's workflow audit row": payload_bytes(record_start),
    }
    for index, (stage_item, plan) in enumerate(
        zip(item[C.WORKFLOW_STAGES]["L"], plans, strict=True)
    ):
        sizes.update(_stage_payloads(index, stage_item["M"], plan, run))
    return sizes


def _stage_payloads(
    index: int, stage: dict[str, Any], plan: StagePlan, run: dict[str, Any]
) -> dict[str, int]:
    scripts = stage[C.SCRIPTS]["L"]
    chunks = [scripts[i : i + plan.chunk_size] for i in range(0, len(scripts), plan.chunk_size)]
    iteration = {
        **run,
        "stage_index": index,
        "execution_flag": "y",
        "execution_type": stage[C.EXECUTION_TYPE]["S"],
        "timeout_seconds": 99_999_999,
        "plan": {**plan.to_values(), "chunk_size": str(plan.chunk_size)},
        "chunks": chunks,
        "heartbeat_seconds": 99_999_999,
        "error": _FAILURE,
    }
    sizes = {f"stage {index + 1}'s iteration of RunStages": payload_bytes(iteration)}
    if plan.mode == CHILDREN:
        child_stage = {"M": {**stage, C.SCRIPTS: {"L": max(chunks, key=payload_bytes)}}}
        child_input = {
            **run,
            "child_of": _EXECUTION_ARN,
            "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID": _EXECUTION_ARN,
            "config": {
                "Item": {
                    "heartbeat_seconds": {"N": "99999999"},
                    "workflow_stages": {"L": [child_stage]},
                }
            },
        }
        # RunChunk's answer: the child's DescribeExecution, its input included.
        answer = {"ExecutionArn": _EXECUTION_ARN, "Input": child_input, "Cause": "x" * 32_768}
        sizes[f"stage {index + 1}'s largest child execution"] = payload_bytes(answer)
    return sizes


def _audit_row(workflow: Workflow, *, failed: bool) -> dict[str, Any]:
    """The workflow audit row as RecordStart writes it; `failed`: as MarkFailed leaves it."""
    row: dict[str, Any] = {
        "workflow_execution_id": _LONGEST_NAME,
        "workflow_id": workflow.workflow_id,
        "execution_status": "Running",
        "execution_start_ts": "2026-11-27T08:01:02.123Z",
        "rsql_jobs": workflow.job_names,
        "restart_of": _LONGEST_NAME,
    }
    if failed:
        row.update(
            execution_status="Failed",
            execution_end_ts="2026-11-27T08:01:02.123Z",
            error=_FAILURE["Error"],
            cause=_FAILURE["Cause"],
        )
    return items.to_item(row)


def payload_bytes(value: Any) -> int:
    """A payload as Step Functions counts it: the UTF-8 bytes of its JSON text."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def item_bytes(item: dict[str, Any]) -> int:
    """A DynamoDB item's size by DynamoDB's rules: names and values, numbers by digits, 3
    bytes per list or map plus 1 per element."""
    return sum(len(name.encode("utf-8")) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return len(str(inner).encode("utf-8"))
    if kind == "N":
        digits = Decimal(str(inner)).as_tuple().digits
        return (len(digits) + 1) // 2 + 1
    if kind == "L":
        return 3 + sum(1 + _value_bytes(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + _value_bytes(v) for k, v in inner.items())
    return 1  # BOOL, NULL


def _kb(size: int) -> str:
    return f"{size / 1024:.1f} KB"
