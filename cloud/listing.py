"""`rsql-cloud workflow list`: every configured workflow, its schedule (as EventBridge Scheduler
has it), the schedule's next run, and the workflow's last run (cloud/history.py: the workflow
audit table's runs index, newest first)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

from agent.items import from_item
from agent.schema import Config as C
from cloud import schedule_expressions
from cloud.history import workflow_runs
from cloud.stack import Stack
from cloud.workflow_schedules import current_schedule

NONE: Final = "-"
_HEADERS: Final = ("WORKFLOW", "SCHEDULE", "TIME ZONE", "STATE", "NEXT RUN", "LAST RUN", "STARTED")


@dataclass(frozen=True)
class WorkflowLine:
    """One workflow as `workflow list` shows it; None where there is nothing to show."""

    workflow_id: str
    schedule: str | None
    timezone: str | None
    # ENABLED or DISABLED (Scheduler's), MISSING when the config has one and Scheduler not.
    state: str | None
    next_run: str | None  # ISO UTC
    last_execution_id: str | None
    last_status: str | None
    last_start: str | None
    last_end: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_workflows(
    stack: Stack,
    now: dt.datetime | None = None,
    note: Callable[[str], None] = lambda message: None,
) -> list[WorkflowLine]:
    """Every workflow of the config table, by id."""
    moment = now or dt.datetime.now(dt.UTC)
    lines = []
    for item in _config_items(stack):
        workflow_id = str(item[C.WORKFLOW_ID])
        configured = item.get(C.SCHEDULE)
        schedule = current_schedule(stack, workflow_id) if configured else None
        runs = workflow_runs(stack, workflow_id, 1, note=note)
        last = runs[0] if runs else None
        lines.append(
            WorkflowLine(
                workflow_id=workflow_id,
                schedule=_expression(schedule, configured),
                timezone=_timezone(schedule, configured),
                state=(schedule or {}).get("State") or ("MISSING" if configured else None),
                next_run=_next_run(schedule, moment),
                last_execution_id=last.execution_id if last else None,
                last_status=last.status if last else None,
                last_start=last.start_ts if last else None,
                last_end=last.end_ts if last else None,
            )
        )
    return sorted(lines, key=lambda line: line.workflow_id)


def _config_items(stack: Stack) -> list[dict[str, Any]]:
    pages = stack.aws.dynamodb.get_paginator("scan")
    names = {"#id": C.WORKFLOW_ID, "#schedule": C.SCHEDULE}
    with stack.deployed():
        return [
            from_item(item)
            for page in pages.paginate(
                TableName=stack.names.config_table,
                ProjectionExpression="#id, #schedule",
                ExpressionAttributeNames=names,
            )
            for item in page.get("Items", [])
        ]


def _expression(schedule: dict[str, Any] | None, configured: Any) -> str | None:
    if schedule is not None:
        return str(schedule.get("ScheduleExpression"))
    return str(configured.get("expression")) if isinstance(configured, dict) else None


def _timezone(schedule: dict[str, Any] | None, configured: Any) -> str | None:
    if schedule is not None:
        return str(schedule.get("ScheduleExpressionTimezone") or "UTC")
    return str(configured.get("timezone") or "UTC") if isinstance(configured, dict) else None


def _next_run(schedule: dict[str, Any] | None, now: dt.datetime) -> str | None:
    """When Scheduler runs it next (enabled schedules only)."""
    if schedule is None or schedule.get("State") != "ENABLED":
        return None
    try:
        expression = schedule_expressions.parse(str(schedule.get("ScheduleExpression")))
        timezone = str(schedule.get("ScheduleExpressionTimezone") or "UTC")
        start = schedule.get("StartDate") or schedule.get("CreationDate")
        moment = schedule_expressions.next_run(
            expression, timezone, now, start=start if isinstance(start, dt.datetime) else None
        )
    except schedule_expressions.ExpressionError:
        return None
    end = schedule.get("EndDate")
    if moment is None or (isinstance(end, dt.datetime) and moment > end):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def list_lines(workflows: list[WorkflowLine]) -> list[str]:
    """`workflow list` as a table."""
    table = [list(_HEADERS)]
    for line in workflows:
        table.append(
            [
                line.workflow_id,
                line.schedule or NONE,
                line.timezone or NONE,
                line.state or NONE,
                line.next_run or NONE,
                line.last_status or NONE,
                line.last_start or NONE,
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(_HEADERS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
