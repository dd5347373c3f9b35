"""What a run left behind: its workflow and job audit rows, each job's status, and
`rsql-cloud workflow status` (as JSON or as a table)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

from agent import schema
from agent.items import from_item, to_item
from agent.schema import JobAudit as J
from agent.schema import WorkflowAudit as W
from cloud.aws import CloudError, iso_or_none
from cloud.children import Child, child_executions, summary
from cloud.config import Workflow
from cloud.plan import CHILDREN, plan_workflow
from cloud.stack import Stack, input_workflow_id

NOT_RUN: Final = "-"
_BATCH_GET_MAX_KEYS: Final = 100
_BATCH_GET_ATTEMPTS: Final = 6
_JOB_HEADERS: Final = (
    "STAGE",
    "JOB",
    "STATUS",
    "EXIT",
    "DURATION",
    "ATTEMPT",
    "INSTANCE",
    "STARTED",
)


# -- rows ----------------------------------------------------------------------------------------


def job_rows(stack: Stack, jobs: list[str], execution_name: str) -> dict[str, dict[str, Any]]:
    """The job audit rows of one run, by job name."""
    keys = [{J.JOB_NAME: job, J.WORKFLOW_EXECUTION_ID: execution_name} for job in jobs]
    rows = batch_get(stack, stack.names.job_audit_table, keys)
    return {str(row[J.JOB_NAME]): row for row in rows}


def batch_get(
    stack: Stack, table: str, keys: list[dict[str, Any]], attributes: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The items of `table` with these keys (plain values), in no particular order; missing
    ones are left out. BatchGetItem, 100 keys a request; `attributes` limits what comes back
    (the read costs the same, the answer is smaller)."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), _BATCH_GET_MAX_KEYS):
        batch: dict[str, Any] = {
            "Keys": [to_item(key) for key in keys[start : start + _BATCH_GET_MAX_KEYS]],
            "ConsistentRead": True,
        }
        if attributes:
            batch["ProjectionExpression"] = ", ".join(f"#a{i}" for i in range(len(attributes)))
            batch["ExpressionAttributeNames"] = {f"#a{i}": a for i, a in enumerate(attributes)}
        request: Any = {table: batch}
        for attempt in range(_BATCH_GET_ATTEMPTS):
            with stack.deployed():
                answer = stack.aws.dynamodb.batch_get_item(RequestItems=request)
            found += [from_item(item) for item in answer.get("Responses", {}).get(table, [])]
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(0.05 * 2**attempt)  # throttled: back off, as DynamoDB asks
    return found


def workflow_row(stack: Stack, execution_name: str) -> dict[str, Any] | None:
    """The workflow audit row of a run, found by its partition key alone."""
    with stack.deployed():
        answer = stack.aws.dynamodb.query(
            TableName=stack.names.workflow_audit_table,
            KeyConditionExpression="#id = :id",
            ExpressionAttributeNames={"#id": W.WORKFLOW_EXECUTION_ID},
            ExpressionAttributeValues=to_item({":id": execution_name}),
            ConsistentRead=True,
        )
    items = answer.get("Items") or []
    return from_item(items[0]) if items else None


@dataclass(frozen=True)
class JobStatus:
    job_name: str
    stage_index: int | None
    status: str
    row: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.row,
            J.JOB_NAME: self.job_name,
            J.STAGE_INDEX: self.stage_index,
            J.EXECUTION_STATUS: self.status,
        }


def job_statuses(
    workflow: Workflow | None, jobs: list[str], rows: dict[str, dict[str, Any]]
) -> list[JobStatus]:
    """Every job of the run: its row's status, `Skipped` for a job of a disabled stage
    without a row, `-` for one that has not run."""
    stage_of: dict[str, int] = {}
    disabled: set[str] = set()
    if workflow is not None:
        for index, stage in enumerate(workflow.workflow_stages):
            for job in stage.scripts:
                stage_of[job] = index
                if not stage.enabled:
                    disabled.add(job)
    statuses = []
    for job in jobs:
        row = rows.get(job, {})
        status = row.get(J.EXECUTION_STATUS) or (schema.SKIPPED if job in disabled else NOT_RUN)
        position = row.get(J.STAGE_INDEX, stage_of.get(job))
        stage_index = position if isinstance(position, int) else None
        statuses.append(JobStatus(job, stage_index, str(status), row))
    return statuses


# -- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStatus:
    """Everything known about one run: audit rows and what Step Functions says."""

    execution_name: str
    workflow_id: str
    workflow_row: dict[str, Any] | None
    execution: dict[str, Any] | None
    jobs: list[JobStatus]
    children: list[Child] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        execution = None
        if self.execution is not None:
            execution = {
                "execution_arn": self.execution.get("executionArn"),
                "status": self.execution.get("status"),
                "start_date": iso_or_none(self.execution.get("startDate")),
                "stop_date": iso_or_none(self.execution.get("stopDate")),
                "error": self.execution.get("error"),
                "cause": self.execution.get("cause"),
            }
        return {
            "workflow_execution_id": self.execution_name,
            "workflow_id": self.workflow_id,
            "workflow": self.workflow_row,
            "execution": execution,
            "jobs": [job.to_dict() for job in self.jobs],
            "child_executions": [child.to_dict() for child in self.children],
        }


def run_status(stack: Stack, execution_name: str) -> RunStatus:
    """Read a run's rows and Step Functions' view of it; a CloudError when neither exists."""
    row = workflow_row(stack, execution_name)
    described = stack.describe_execution(execution_name)
    if row is None and described is None:
        raise CloudError(
            f"no execution {execution_name!r} in stack {stack.names.stack_name!r} (no row in "
            f"{stack.names.workflow_audit_table}, none in state machine "
            f"{stack.names.state_machine})"
        )
    workflow_id = str((row or {}).get(W.WORKFLOW_ID) or input_workflow_id(described))
    workflow = stack.workflow_or_none(workflow_id)
    jobs = [str(j) for j in (row or {}).get(W.RSQL_JOBS) or []]
    if not jobs and workflow is not None:
        jobs = workflow.job_names
    # The stages come from today's config: trust it only if it still lists the run's jobs.
    if workflow is not None and workflow.job_names != jobs:
        workflow = None
    rows = job_rows(stack, jobs, execution_name) if jobs else {}
    # Only a run that has stages in child executions has children to look up.
    in_children = workflow is None or any(p.mode == CHILDREN for p in plan_workflow(workflow))
    children = child_executions(stack, execution_name) if described and in_children else []
    return RunStatus(
        execution_name,
        workflow_id,
        row,
        described,
        job_statuses(workflow, jobs, rows),
        children,
    )


def status_lines(report: RunStatus) -> list[str]:
    """`workflow status` as text: the run's header lines, then a table of its jobs."""
    row = report.workflow_row or {}
    execution = report.to_dict()["execution"] or {}
    sfn_status = f"   (Step Functions: {execution['status']})" if execution else ""
    lines = [
        f"Execution   {report.execution_name}   (workflow {report.workflow_id})",
        f"Status      {row.get(W.EXECUTION_STATUS, '-')}{sfn_status}",
        f"Started     {row.get(W.EXECUTION_START_TS) or execution.get('start_date') or '-'}",
        f"Ended       {row.get(W.EXECUTION_END_TS) or execution.get('stop_date') or '-'}",
    ]
    if row.get(W.RESTART_OF):
        lines.append(f"Restart of  {row[W.RESTART_OF]}")
    for label, key in (("Error", W.ERROR), ("Cause", W.CAUSE)):
        value = row.get(key) or execution.get(key)
        if value:
            lines.append(f"{label:<12}" + str(value).replace("\n", "\n" + " " * 12))
    if report.children:
        lines.append(f"Children    {summary(report.children)}")
        lines += [f"            {_child_line(child)}" for child in report.children]
    return [*lines, "", *_job_table(report.jobs)]


def _child_line(child: Child) -> str:
    stage = "-" if child.stage_index is None else str(child.stage_index + 1)
    jobs = f"{child.jobs[0]} .. {child.jobs[-1]} ({len(child.jobs)} jobs)" if child.jobs else "-"
    return f"{child.status:<9} stage {stage}  {jobs}  {child.name}"


def _job_table(jobs: list[JobStatus]) -> list[str]:
    table = [list(_JOB_HEADERS)]
    for job in jobs:
        duration = job.row.get(J.DURATION_MS)
        table.append(
            [
                "-" if job.stage_index is None else str(job.stage_index + 1),
                job.job_name,
                job.status,
                str(job.row.get(J.EXIT_CODE, "-")),
                format_duration(duration / 1000) if isinstance(duration, int | float) else "-",
                str(job.row.get(J.ATTEMPT, "-")),
                str(job.row.get(J.INSTANCE_ID, "-")),
                str(job.row.get(J.EXECUTION_START_TS, "-")),
            ]
        )
    return format_table(table)


def format_table(table: list[list[str]]) -> list[str]:
    """Rows of cells (the first the headers) as lines of left-aligned columns."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]


def format_duration(seconds: float) -> str:
    """`35 ms`, `2.5 s`, `3m07s`, `1h05m`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
