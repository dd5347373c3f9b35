"""A workflow's runs, newest first (`rsql-cloud workflow history`), and its jobs' durations
over those runs (the report's sparklines).

The workflow audit table is keyed by execution (PK `workflow_execution_id`, SK
`workflow_id`), so finding one workflow's runs by the table's own keys takes a Scan of every
run of every workflow. Deploy therefore adds the index `by_workflow_start` (PK `workflow_id`, SK
`execution_start_ts`): the last N runs are one Query reading N items. A stack deployed before
the index existed, or one whose index is still backfilling, is scanned instead, with a note.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from agent import schema
from agent.items import from_item, to_item
from agent.schema import JobAudit as J
from agent.schema import WorkflowAudit as W
from cloud.aws import CloudError, is_error
from cloud.reports import batch_get, format_duration, format_table
from cloud.stack import Stack
from cloud.tables import RUNS_BY_WORKFLOW_INDEX

# Statuses that mean "this job is why the run failed" (Cancelled jobs were stopped by it).
FAILING: Final = frozenset({schema.FAILED, schema.TIMED_OUT})
_HEADERS: Final = ("EXECUTION", "STATUS", "STARTED", "DURATION", "FAILED JOB", "ERROR")


@dataclass(frozen=True)
class Run:
    """One run of a workflow, from its workflow audit row."""

    execution_id: str
    status: str
    start_ts: str
    end_ts: str | None
    error: str | None
    jobs: tuple[str, ...]
    restart_of: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Run:
        return cls(
            execution_id=str(row[W.WORKFLOW_EXECUTION_ID]),
            status=str(row.get(W.EXECUTION_STATUS) or "-"),
            start_ts=str(row.get(W.EXECUTION_START_TS) or ""),
            end_ts=_text(row.get(W.EXECUTION_END_TS)),
            error=_text(row.get(W.ERROR)),
            jobs=tuple(str(job) for job in row.get(W.RSQL_JOBS) or ()),
            restart_of=_text(row.get(W.RESTART_OF)),
        )

    @property
    def duration_s(self) -> float | None:
        """Wall time from the row's start to its end; None while it runs."""
        if not self.end_ts or not self.start_ts:
            return None
        return (parse_ts(self.end_ts) - parse_ts(self.start_ts)).total_seconds()


def _text(value: Any) -> str | None:
    return str(value) if value else None


def parse_ts(text: str) -> dt.datetime:
    """A table timestamp (`2026-11-27T08:01:02.123Z`) as an aware datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def workflow_runs(
    stack: Stack,
    workflow_id: str,
    limit: int,
    *,
    started_by: str | None = None,
    note: Callable[[str], None] = lambda message: None,
) -> list[Run]:
    """The newest `limit` runs of a workflow (those started at or before `started_by`, when
    given), newest first."""
    try:
        rows = _query_index(stack, workflow_id, limit, started_by)
    except ClientError as exc:
        # No such index (deployed before it existed) or not readable yet (backfilling).
        if not is_error(exc, "ValidationException") or "index" not in str(exc).lower():
            raise
        note(
            f"table {stack.names.workflow_audit_table} has no usable index "
            f"{RUNS_BY_WORKFLOW_INDEX} yet, so every run of every workflow is scanned: "
            f"`rsql-cloud deploy{stack.stack_flag}` adds it"
        )
        rows = _scan(stack, workflow_id, started_by)
    runs = [Run.from_row(row) for row in rows]
    runs.sort(key=lambda run: (run.start_ts, run.execution_id), reverse=True)
    return runs[:limit]


def _query_index(
    stack: Stack, workflow_id: str, limit: int, started_by: str | None
) -> list[dict[str, Any]]:
    condition = "#wf = :wf"
    names = {"#wf": W.WORKFLOW_ID}
    values: dict[str, Any] = {":wf": workflow_id}
    if started_by:
        condition += " AND #start <= :start"
        names["#start"] = W.EXECUTION_START_TS
        values[":start"] = started_by
    request: dict[str, Any] = {
        "TableName": stack.names.workflow_audit_table,
        "IndexName": RUNS_BY_WORKFLOW_INDEX,
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_item(values),
        "ScanIndexForward": False,  # newest first: the sort key is the start time
    }
    rows: list[dict[str, Any]] = []
    while len(rows) < limit:
        with stack.deployed():
            page = stack.aws.dynamodb.query(**request, Limit=limit - len(rows))
        rows += [from_item(item) for item in page.get("Items", [])]
        if not page.get("LastEvaluatedKey"):
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return rows


def _scan(stack: Stack, workflow_id: str, started_by: str | None) -> list[dict[str, Any]]:
    """Every run of the workflow, the slow way: a Scan reads (and is billed for) the whole
    table whatever the filter keeps."""
    rows: list[dict[str, Any]] = []
    with stack.deployed():
        pages = stack.aws.dynamodb.get_paginator("scan").paginate(
            TableName=stack.names.workflow_audit_table,
            FilterExpression="#wf = :wf",
            ExpressionAttributeNames={"#wf": W.WORKFLOW_ID},
            ExpressionAttributeValues=to_item({":wf": workflow_id}),
        )
        for page in pages:
            rows += [from_item(item) for item in page.get("Items", [])]
    if started_by:
        rows = [row for row in rows if str(row.get(W.EXECUTION_START_TS, "")) <= started_by]
    return rows


def failed_jobs(stack: Stack, runs: list[Run]) -> dict[str, list[str]]:
    """For each failed run, its jobs that failed or timed out, in job order (one batch read of
    the failed runs' job rows, status only)."""
    failed = [run for run in runs if run.status != schema.COMPLETED and run.end_ts]
    keys = [
        {J.JOB_NAME: job, J.WORKFLOW_EXECUTION_ID: run.execution_id}
        for run in failed
        for job in run.jobs
    ]
    attributes = (J.JOB_NAME, J.WORKFLOW_EXECUTION_ID, J.EXECUTION_STATUS)
    bad = {
        (str(row[J.WORKFLOW_EXECUTION_ID]), str(row[J.JOB_NAME]))
        for row in batch_get(stack, stack.names.job_audit_table, keys, attributes)
        if row.get(J.EXECUTION_STATUS) in FAILING
    }
    return {
        run.execution_id: [job for job in run.jobs if (run.execution_id, job) in bad]
        for run in failed
    }


def job_rows_over_runs(
    stack: Stack, jobs: list[str], runs: list[Run]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The job audit rows of these jobs in these runs, by (execution id, job name): status and
    duration only."""
    keys = [
        {J.JOB_NAME: job, J.WORKFLOW_EXECUTION_ID: run.execution_id}
        for run in runs
        for job in jobs
        if not run.jobs or job in run.jobs
    ]
    attributes = (J.JOB_NAME, J.WORKFLOW_EXECUTION_ID, J.EXECUTION_STATUS, J.DURATION_MS)
    rows = batch_get(stack, stack.names.job_audit_table, keys, attributes)
    return {(str(row[J.WORKFLOW_EXECUTION_ID]), str(row[J.JOB_NAME])): row for row in rows}


def runs_or_error(
    stack: Stack, workflow_id: str, limit: int, note: Callable[[str], None]
) -> tuple[list[Run], dict[str, list[str]]]:
    """`workflow history`: the runs and their failed jobs; a CloudError for a workflow that
    neither ran nor is configured (most likely a typo)."""
    runs = workflow_runs(stack, workflow_id, limit, note=note)
    if not runs and stack.config_item(workflow_id) is None:
        raise CloudError(
            f"no workflow {workflow_id!r} in stack {stack.names.stack_name!r}: no runs in "
            f"{stack.names.workflow_audit_table} and no item in {stack.names.config_table}"
        )
    return runs, failed_jobs(stack, runs)


def history_dicts(runs: list[Run], failed: dict[str, list[str]]) -> list[dict[str, Any]]:
    """`workflow history --json`: one object per run, newest first."""
    return [
        {
            W.WORKFLOW_EXECUTION_ID: run.execution_id,
            W.EXECUTION_STATUS: run.status,
            W.EXECUTION_START_TS: run.start_ts,
            W.EXECUTION_END_TS: run.end_ts,
            "duration_ms": None if run.duration_s is None else round(run.duration_s * 1000),
            "failed_jobs": failed.get(run.execution_id, []),
            W.ERROR: run.error,
            W.RESTART_OF: run.restart_of,
        }
        for run in runs
    ]


def history_lines(runs: list[Run], failed: dict[str, list[str]]) -> list[str]:
    """`workflow history` as a table, newest first."""
    table = [list(_HEADERS)]
    for run in runs:
        duration = run.duration_s
        table.append(
            [
                run.execution_id,
                run.status,
                run.start_ts or "-",
                "-" if duration is None else format_duration(duration),
                ", ".join(failed.get(run.execution_id, [])) or "-",
                run.error or "-",
            ]
        )
    return format_table(table)
