"""The child executions of a run: a wide or long stage runs in chunks, each a child execution of
the same state machine (`cloud/plan.py`). They are part of the run: their jobs' audit rows and
log streams carry the run's execution name, and the run's history names each child (RunChunk's
TaskSubmitted event holds StartExecution's answer)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from cloud.aws import iso_or_none
from cloud.stack import Stack

_START_EXECUTION: Final = "startExecution"


@dataclass(frozen=True)
class Child:
    """One child execution of a run, as Step Functions describes it."""

    execution_arn: str
    status: str
    stage_index: int | None
    jobs: list[str]
    start_date: str | None
    stop_date: str | None
    error: str | None
    cause: str | None

    @property
    def name(self) -> str:
        return self.execution_arn.rsplit(":", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "execution_arn": self.execution_arn,
            "status": self.status,
            "stage_index": self.stage_index,
            "jobs": self.jobs,
            "start_date": self.start_date,
            "stop_date": self.stop_date,
            "error": self.error,
            "cause": self.cause,
        }


def child_arns(stack: Stack, execution_name: str) -> list[str]:
    """The child executions a run started, in the order it started them."""
    arns: list[str] = []
    pages = stack.aws.sfn.get_paginator("get_execution_history")
    with stack.deployed():
        for page in pages.paginate(executionArn=stack.execution_arn(execution_name)):
            for event in page.get("events", []):
                details: dict[str, Any] = dict(event.get("taskSubmittedEventDetails") or {})
                if not str(details.get("resource", "")).startswith(_START_EXECUTION):
                    continue
                try:
                    answer = json.loads(details.get("output") or "{}")
                except json.JSONDecodeError:
                    continue
                if isinstance(answer, dict) and answer.get("ExecutionArn"):
                    arns.append(str(answer["ExecutionArn"]))
    return arns


def child_executions(stack: Stack, execution_name: str) -> list[Child]:
    """Every child execution of a run, described."""
    return [_describe(stack, arn) for arn in child_arns(stack, execution_name)]


def _describe(stack: Stack, arn: str) -> Child:
    described = stack.aws.sfn.describe_execution(executionArn=arn)
    try:
        child_input = json.loads(described.get("input") or "{}")
    except json.JSONDecodeError:
        child_input = {}
    if not isinstance(child_input, dict):
        child_input = {}
    offset = child_input.get("stage_offset")
    return Child(
        execution_arn=arn,
        status=str(described["status"]),
        stage_index=offset if isinstance(offset, int) else None,
        jobs=_jobs_of(child_input),
        start_date=iso_or_none(described.get("startDate")),
        stop_date=iso_or_none(described.get("stopDate")),
        error=described.get("error"),
        cause=described.get("cause"),
    )


def _jobs_of(child_input: dict[str, Any]) -> list[str]:
    # The child's input holds its one stage as the config item does (see RunChunk).
    try:
        stage = child_input["config"]["Item"]["workflow_stages"]["L"][0]["M"]
        return [str(job["S"]) for job in stage["scripts"]["L"]]
    except (KeyError, IndexError, TypeError):
        return []


def summary(children: list[Child]) -> str:
    """`3 child executions: 2 SUCCEEDED, 1 FAILED`."""
    tally: dict[str, int] = {}
    for child in children:
        tally[child.status] = tally.get(child.status, 0) + 1
    counts = ", ".join(f"{n} {status}" for status, n in sorted(tally.items()))
    noun = "child execution" if len(children) == 1 else "child executions"
    return f"{len(children)} {noun}: {counts}"
