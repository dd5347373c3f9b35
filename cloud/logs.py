"""`rsql-cloud workflow logs`: a run's CloudWatch lines, one stream per job attempt
(`<workflow_id>/<execution>/<job>[/<attempt>]`), printed in the workflow's job order."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.schema import WorkflowAudit as W
from cloud.aws import CloudError
from cloud.reports import workflow_row
from cloud.stack import Stack, input_workflow_id


@dataclass(frozen=True)
class LogStream:
    name: str
    job_name: str
    attempt: int

    @property
    def label(self) -> str:
        return self.job_name if self.attempt <= 1 else f"{self.job_name}#{self.attempt}"


def log_streams(
    stack: Stack, workflow_id: str, execution_name: str, job: str | None, order: list[str]
) -> list[LogStream]:
    """The run's streams (`<workflow_id>/<execution>/<job>[/<attempt>]`), in job order."""
    prefix = f"{workflow_id}/{execution_name}/"
    streams = []
    with stack.deployed():
        pages = stack.aws.logs.get_paginator("describe_log_streams")
        for page in pages.paginate(logGroupName=stack.names.log_group, logStreamNamePrefix=prefix):
            for described in page.get("logStreams", []):
                name = described.get("logStreamName", "")
                job_name, _, attempt = name[len(prefix) :].partition("/")
                if job is None or job_name == job:
                    attempts = int(attempt) if attempt.isdigit() else 1
                    streams.append(LogStream(name, job_name, attempts))
    rank = {name: index for index, name in enumerate(order)}
    return sorted(streams, key=lambda s: (rank.get(s.job_name, len(rank)), s.job_name, s.attempt))


def read_stream(
    stack: Stack, stream: str, token: str | None = None
) -> tuple[list[str], str | None]:
    """Lines of a stream from the start (or after `token`), and the token to go on from."""
    lines: list[str] = []
    while True:
        kwargs: dict[str, Any] = {
            "logGroupName": stack.names.log_group,
            "logStreamName": stream,
            "startFromHead": True,
        }
        if token:
            kwargs["nextToken"] = token
        page = stack.aws.logs.get_log_events(**kwargs)
        lines += [str(event.get("message", "")) for event in page.get("events", [])]
        following = page.get("nextForwardToken")
        # The end of a stream is where the forward token stops changing.
        if not following or following == token:
            return lines, token
        token = following


def print_logs(
    stack: Stack,
    execution_name: str,
    job: str | None,
    out: Callable[[str], None],
    *,
    follow: bool = False,
    poll_s: float = 1.0,
) -> int:
    """Print the run's CloudWatch lines (each prefixed with its job when several are shown);
    with `follow`, keep printing new lines until the run ends. Returns how many streams."""
    row = workflow_row(stack, execution_name)
    described = stack.describe_execution(execution_name)
    workflow_id = str((row or {}).get(W.WORKFLOW_ID) or input_workflow_id(described))
    if not workflow_id:
        raise CloudError(f"no execution {execution_name!r} in stack {stack.names.stack_name!r}")
    order = [str(j) for j in (row or {}).get(W.RSQL_JOBS) or []]
    if job is not None and order and job not in order:
        raise CloudError(
            f"job {job!r} is not part of execution {execution_name}; its jobs: {', '.join(order)}"
        )
    tokens: dict[str, str | None] = {}
    while True:
        ended = not follow or _ended(stack, execution_name)
        streams = log_streams(stack, workflow_id, execution_name, job, order)
        several = len({s.label for s in streams}) > 1 or (job is None and follow)
        for stream in streams:
            lines, tokens[stream.name] = read_stream(stack, stream.name, tokens.get(stream.name))
            for line in lines:
                out(f"{stream.label} | {line}" if several else line)
        if ended:
            break
        time.sleep(poll_s)
    if not tokens:
        what = f"job {job}" if job else f"execution {execution_name}"
        raise CloudError(
            f"no log lines for {what} in {stack.names.log_group} (streams "
            f"{workflow_id}/{execution_name}/...): it has not started yet, was skipped, or "
            "printed nothing"
        )
    return len(tokens)


def _ended(stack: Stack, execution_name: str) -> bool:
    described = stack.describe_execution(execution_name)
    return described is None or described["status"] != "RUNNING"
