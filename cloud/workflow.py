"""What the `rsql-cloud workflow` commands do: put a config, start a run (and watch it), show
a run's audit rows, print its CloudWatch lines.

The state machine holds a lock on the config item (`running_execution_id`) while a run is
going, so these commands honour it: `put` replaces the config but keeps the lock, `start`
refuses while the holder runs and clears a lock whose holder ended without releasing it
(StopExecution ends a run without its Catch, so without the release).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import ClientError

from agent import schema
from agent.schema import Config as C
from agent.schema import JobAudit as J
from agent.schema import WorkflowAudit as W
from cloud.aws import Aws, CloudError, is_error
from cloud.config import ConfigError, Workflow, load_workflow_file
from cloud.names import DEFAULT_STACK_NAME, StackNames

EXECUTION_NAME_MAX: Final = 80
_EXECUTION_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_PUT_ATTEMPTS: Final = 5
_BATCH_GET_MAX_KEYS: Final = 100
# What the workflow audit row should say of a run that ended without recording it.
_STATUS_OF_ENDED: Final = {
    "ABORTED": schema.CANCELLED,
    "TIMED_OUT": schema.TIMED_OUT,
    "FAILED": schema.FAILED,
    "SUCCEEDED": schema.COMPLETED,
}
NOT_RUN: Final = "-"


@dataclass
class Stack:
    """One deployed stack, as the workflow commands see it."""

    aws: Aws
    names: StackNames

    @functools.cached_property
    def state_machine_arn(self) -> str:
        return self.aws.account.arn("states", f"stateMachine:{self.names.state_machine}")

    def execution_arn(self, execution_name: str) -> str:
        resource = f"execution:{self.names.state_machine}:{execution_name}"
        return self.aws.account.arn("states", resource)

    @property
    def stack_flag(self) -> str:
        """` --stack-name X` for commands the user is told to run; "" for the default stack."""
        name = self.names.stack_name
        return "" if name == DEFAULT_STACK_NAME else f" --stack-name {name}"

    @property
    def deploy_hint(self) -> str:
        return f"run `rsql-cloud deploy{self.stack_flag}` first"

    @contextlib.contextmanager
    def deployed(self) -> Iterator[None]:
        """Turn "no such table / state machine / log group" into one helpful sentence."""
        try:
            yield
        except ClientError as exc:
            if is_error(exc, "ResourceNotFoundException", "StateMachineDoesNotExist"):
                raise CloudError(
                    f"stack {self.names.stack_name!r} is not deployed here "
                    f"({exc.response['Error'].get('Message', 'a resource is missing')}): "
                    f"{self.deploy_hint}"
                ) from None
            raise

    def config_item(self, workflow_id: str) -> dict[str, Any] | None:
        with self.deployed():
            answer = self.aws.dynamodb.get_item(
                TableName=self.names.config_table,
                Key={C.WORKFLOW_ID: {"S": workflow_id}},
                ConsistentRead=True,
            )
        item = answer.get("Item")
        return dict(item) if item else None

    def workflow(self, workflow_id: str) -> tuple[Workflow, dict[str, Any]]:
        """The validated config and its raw item; a CloudError when it is not there."""
        item = self.config_item(workflow_id)
        if item is None:
            raise CloudError(
                f"workflow {workflow_id!r} is not configured in table {self.names.config_table}: "
                "put it first with `rsql-cloud workflow put FILE.json`"
            )
        try:
            return Workflow.from_item(item, f"table {self.names.config_table}"), item
        except ConfigError as exc:
            raise CloudError(f"{exc} (fix it with `rsql-cloud workflow put FILE.json`)") from None

    def describe_execution(self, execution_name: str) -> dict[str, Any] | None:
        try:
            with self.deployed():
                answer = self.aws.sfn.describe_execution(
                    executionArn=self.execution_arn(execution_name)
                )
        except ClientError as exc:
            if is_error(exc, "ExecutionDoesNotExist"):
                return None
            raise
        return dict(answer)


# -- put -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PutResult:
    workflow: Workflow
    created: bool
    running_execution_id: str | None


def put_workflow(stack: Stack, path: Path) -> PutResult:
    """Validate the file and write the config item, keeping the lock of a running workflow.

    The item is replaced as a whole (no stale attributes survive), but `running_execution_id`
    is copied from the item read just before, under a condition that it has not changed in
    between: a run that starts or ends meanwhile makes the write retry, never lose the lock.
    A run that is going keeps the config it loaded at its start.
    """
    workflow = load_workflow_file(path)
    item = workflow.to_item()
    for _ in range(_PUT_ATTEMPTS):
        current = stack.config_item(workflow.workflow_id)
        lock = (current or {}).get(C.RUNNING_EXECUTION_ID)
        new_item = {**item, C.RUNNING_EXECUTION_ID: lock} if lock else item
        condition = "#lock = :lock" if lock else "attribute_not_exists(#lock)"
        request: dict[str, Any] = {
            "TableName": stack.names.config_table,
            "Item": new_item,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#lock": C.RUNNING_EXECUTION_ID},
        }
        if lock:
            request["ExpressionAttributeValues"] = {":lock": lock}
        try:
            with stack.deployed():
                stack.aws.dynamodb.put_item(**request)
        except ClientError as exc:
            if is_error(exc, "ConditionalCheckFailedException"):
                continue  # the lock changed between the read and the write: read again
            raise
        holder = lock["S"] if lock else None
        return PutResult(workflow, created=current is None, running_execution_id=holder)
    raise CloudError(
        f"workflow {workflow.workflow_id!r}: its running lock kept changing while writing; "
        "try again"
    )


# -- start ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    workflow: Workflow
    execution_name: str
    execution_arn: str
    notes: list[str] = field(default_factory=list)


def execution_name(workflow_id: str, now: dt.datetime | None = None, token: str = "") -> str:
    """`<workflow_id>-<UTC yyyymmddTHHMMSS>-<4 hex>`, within Step Functions' name rules."""
    moment = now or dt.datetime.now(dt.UTC)
    suffix = f"-{moment.strftime('%Y%m%dT%H%M%S')}-{token or secrets.token_hex(2)}"
    base = re.sub(r"[^A-Za-z0-9_-]", "_", workflow_id)
    return base[: EXECUTION_NAME_MAX - len(suffix)] + suffix


def start_workflow(
    stack: Stack,
    workflow_id: str,
    *,
    execution_id: str | None = None,
    restart_of: str | None = None,
) -> Started:
    """Start a run after checking what would make it fail at once: no config, a run still
    going, a bad --restart-of."""
    if execution_id is not None and not _EXECUTION_NAME_RE.match(execution_id):
        raise CloudError(
            f"--execution-id: must be 1-{EXECUTION_NAME_MAX} letters, digits, '-' or '_', "
            f"got {execution_id!r}"
        )
    workflow, item = stack.workflow(workflow_id)
    notes = _check_lock(stack, workflow_id, item.get(C.RUNNING_EXECUTION_ID, {}).get("S"))
    if restart_of:
        _check_restart_of(stack, workflow_id, restart_of)
    name = execution_id or execution_name(workflow_id)
    payload = {"workflow_id": workflow_id, "restart_of": restart_of or ""}
    try:
        with stack.deployed():
            answer = stack.aws.sfn.start_execution(
                stateMachineArn=stack.state_machine_arn, name=name, input=json.dumps(payload)
            )
    except ClientError as exc:
        if is_error(exc, "ExecutionAlreadyExists"):
            raise CloudError(
                f"an execution named {name!r} already exists in state machine "
                f"{stack.names.state_machine}: pick another --execution-id"
            ) from None
        raise
    return Started(workflow, name, answer["executionArn"], notes)


def _check_lock(stack: Stack, workflow_id: str, holder: str | None) -> list[str]:
    if not holder:
        return []
    described = stack.describe_execution(holder)
    if described is not None and described["status"] == "RUNNING":
        arn = described["executionArn"]
        raise CloudError(
            f"workflow {workflow_id} is already running as execution {holder}; wait for it or "
            f"stop it (aws stepfunctions stop-execution --execution-arn {arn})"
        )
    # The holder ended without releasing the lock (stopped, or its release failed). Release it
    # only if it still names that execution: another start may have taken it meanwhile.
    try:
        stack.aws.dynamodb.update_item(
            TableName=stack.names.config_table,
            Key={C.WORKFLOW_ID: {"S": workflow_id}},
            UpdateExpression="REMOVE #lock",
            ConditionExpression="#lock = :old",
            ExpressionAttributeNames={"#lock": C.RUNNING_EXECUTION_ID},
            ExpressionAttributeValues={":old": {"S": holder}},
        )
    except ClientError as exc:
        if not is_error(exc, "ConditionalCheckFailedException"):
            raise
    if described is None:
        return [f"cleared the lock of execution {holder}, which no longer exists"]
    word = _STATUS_OF_ENDED.get(described["status"], schema.FAILED)
    _close_audit_row(stack, workflow_id, holder, word, described)
    return [
        f"cleared the lock left by execution {holder} ({described['status']}); "
        f"its workflow audit row now says {word}"
    ]


def _close_audit_row(
    stack: Stack, workflow_id: str, name: str, word: str, described: dict[str, Any]
) -> None:
    """Record the end of a run that could not record it itself (only if it still says
    Running: a row the state machine finished is left as it is)."""
    stopped = described.get("stopDate") or dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {
        ":status": {"S": word},
        ":end": {"S": schema.iso_utc_ms(stopped.timestamp())},
        ":running": {"S": schema.RUNNING},
    }
    expression = "SET #status = :status, #end = :end"
    names = {"#status": W.EXECUTION_STATUS, "#end": W.EXECUTION_END_TS}
    for attribute in (W.ERROR, W.CAUSE):
        if described.get(attribute):
            values[f":{attribute}"] = {"S": str(described[attribute])}
            names[f"#{attribute}"] = attribute
            expression += f", #{attribute} = :{attribute}"
    try:
        stack.aws.dynamodb.update_item(
            TableName=stack.names.workflow_audit_table,
            Key={W.WORKFLOW_EXECUTION_ID: {"S": name}, W.WORKFLOW_ID: {"S": workflow_id}},
            UpdateExpression=expression,
            ConditionExpression="#status = :running",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    except ClientError as exc:
        # No row (stopped before it wrote one) or a row already final: nothing to record.
        if not is_error(exc, "ConditionalCheckFailedException"):
            raise


def _check_restart_of(stack: Stack, workflow_id: str, restart_of: str) -> None:
    described = stack.describe_execution(restart_of)
    if described is None:
        raise CloudError(
            f"--restart-of: no execution {restart_of!r} in state machine "
            f"{stack.names.state_machine}"
        )
    status = described["status"]
    if status == "RUNNING":
        raise CloudError(f"--restart-of: execution {restart_of} is still running")
    if status == "SUCCEEDED":
        raise CloudError(
            f"--restart-of: execution {restart_of} succeeded, there is nothing to restart "
            "(start a fresh run without --restart-of)"
        )
    ran = (_json(described.get("input")) or {}).get("workflow_id")
    if ran != workflow_id:
        raise CloudError(
            f"--restart-of: execution {restart_of} ran workflow {ran!r}, not {workflow_id!r}"
        )


def _json(text: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# -- rows ----------------------------------------------------------------------------------------


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain JSON values (numbers as int where they are whole)."""
    return {name: _plain_value(value) for name, value in item.items()}


def _plain_value(value: dict[str, Any]) -> Any:
    (kind, inner), *_ = value.items()
    if kind == "N":
        number = float(inner)
        return int(number) if number.is_integer() else number
    if kind == "L":
        return [_plain_value(v) for v in inner]
    if kind == "M":
        return plain(inner)
    if kind == "NULL":
        return None
    return inner


def job_rows(stack: Stack, jobs: list[str], execution_name: str) -> dict[str, dict[str, Any]]:
    """The job audit rows of one run, by job name (BatchGetItem, 100 keys a request)."""
    rows: dict[str, dict[str, Any]] = {}
    table = stack.names.job_audit_table
    for start in range(0, len(jobs), _BATCH_GET_MAX_KEYS):
        keys = [
            {J.JOB_NAME: {"S": job}, J.WORKFLOW_EXECUTION_ID: {"S": execution_name}}
            for job in jobs[start : start + _BATCH_GET_MAX_KEYS]
        ]
        request: Any = {table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(6):
            with stack.deployed():
                answer = stack.aws.dynamodb.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(table, []):
                row = plain(dict(item))
                rows[str(row[J.JOB_NAME])] = row
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(0.05 * 2**attempt)  # throttled: back off, as DynamoDB asks
    return rows


def workflow_row(stack: Stack, execution_name: str) -> dict[str, Any] | None:
    """The workflow audit row of a run, found by its partition key alone."""
    with stack.deployed():
        answer = stack.aws.dynamodb.query(
            TableName=stack.names.workflow_audit_table,
            KeyConditionExpression="#id = :id",
            ExpressionAttributeNames={"#id": W.WORKFLOW_EXECUTION_ID},
            ExpressionAttributeValues={":id": {"S": execution_name}},
            ConsistentRead=True,
        )
    items = answer.get("Items") or []
    return plain(dict(items[0])) if items else None


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

    def to_dict(self) -> dict[str, Any]:
        execution = None
        if self.execution is not None:
            execution = {
                "execution_arn": self.execution.get("executionArn"),
                "status": self.execution.get("status"),
                "start_date": _iso(self.execution.get("startDate")),
                "stop_date": _iso(self.execution.get("stopDate")),
                "error": self.execution.get("error"),
                "cause": self.execution.get("cause"),
            }
        return {
            "workflow_execution_id": self.execution_name,
            "workflow_id": self.workflow_id,
            "workflow": self.workflow_row,
            "execution": execution,
            "jobs": [job.to_dict() for job in self.jobs],
        }


def _iso(moment: Any) -> str | None:
    return schema.iso_utc_ms(moment.timestamp()) if isinstance(moment, dt.datetime) else None


def run_status(stack: Stack, execution_name: str) -> RunStatus:
    row = workflow_row(stack, execution_name)
    described = stack.describe_execution(execution_name)
    if row is None and described is None:
        raise CloudError(
            f"no execution {execution_name!r} in stack {stack.names.stack_name!r} (no row in "
            f"{stack.names.workflow_audit_table}, none in state machine "
            f"{stack.names.state_machine})"
        )
    workflow_id = str((row or {}).get(W.WORKFLOW_ID) or _input_workflow_id(described))
    item = stack.config_item(workflow_id) if workflow_id else None
    workflow = _config_or_none(item, stack)
    jobs = [str(j) for j in (row or {}).get(W.RSQL_JOBS) or []]
    if not jobs and workflow is not None:
        jobs = workflow.job_names
    # The stages come from today's config: trust it only if it still lists the run's jobs.
    if workflow is not None and workflow.job_names != jobs:
        workflow = None
    rows = job_rows(stack, jobs, execution_name) if jobs else {}
    return RunStatus(
        execution_name, workflow_id, row, described, job_statuses(workflow, jobs, rows)
    )


def _input_workflow_id(described: dict[str, Any] | None) -> str:
    return str((_json((described or {}).get("input")) or {}).get("workflow_id") or "")


def _config_or_none(item: dict[str, Any] | None, stack: Stack) -> Workflow | None:
    if item is None:
        return None
    try:
        return Workflow.from_item(item, stack.names.config_table)
    except ConfigError:
        return None


# -- logs ----------------------------------------------------------------------------------------


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
    workflow_id = str((row or {}).get(W.WORKFLOW_ID) or _input_workflow_id(described))
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
            f"{workflow_id}/{execution_name}/...): it has not started yet, or was skipped"
        )
    return len(tokens)


def _ended(stack: Stack, execution_name: str) -> bool:
    described = stack.describe_execution(execution_name)
    return described is None or described["status"] != "RUNNING"


# -- watching a run ------------------------------------------------------------------------------

WAIT_POLL_S: Final = 0.5
_COLOURS: Final = {
    schema.COMPLETED: "32",
    schema.RUNNING: "33",
    schema.FAILED: "31",
    schema.TIMED_OUT: "31",
    schema.CANCELLED: "35",
    schema.ABANDONED: "35",
    schema.SKIPPED: "2",
}


@dataclass(frozen=True)
class Snapshot:
    """One look at a run: Step Functions' status and every job's."""

    workflow: Workflow
    execution_name: str
    status: str
    elapsed_s: float
    jobs: list[JobStatus]


def snapshot(
    stack: Stack, workflow: Workflow, execution_name: str, status: str, elapsed_s: float
) -> Snapshot:
    rows = job_rows(stack, workflow.job_names, execution_name)
    return Snapshot(
        workflow,
        execution_name,
        status,
        elapsed_s,
        job_statuses(workflow, workflow.job_names, rows),
    )


class ProgressView:
    """Jobs by stage with their status. On a terminal the view is redrawn in place; anywhere
    else (a CI log, a pipe) only what changed is printed, one line per change."""

    def __init__(
        self, write: Callable[[str], Any], *, tty: bool, width: int = 100, height: int = 40
    ) -> None:
        self._write = write
        self._tty = tty
        self._width = max(width, 40)
        self._height = max(height, 5)
        self._drawn = 0
        self._seen: dict[str, str] = {}
        self._status = ""

    def show(self, snap: Snapshot) -> None:
        if self._tty:
            self._redraw(snap)
        else:
            self._changes(snap)

    def _redraw(self, snap: Snapshot) -> None:
        # Lines are cut to the terminal's width: a wrapped line would break the cursor-up count.
        # A frame taller than the screen cannot be redrawn in place: list only the jobs that
        # run or failed then, under one summary line per stage.
        lines = frame(snap)
        if len(lines) >= self._height:
            lines = compact_frame(snap)[: self._height - 1]
        lines = [line[: self._width - 1] if len(line) >= self._width else line for line in lines]
        up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        coloured = [_colour(line) for line in lines]
        self._write(up + "\n".join(coloured) + "\n")
        self._drawn = len(lines)

    def _changes(self, snap: Snapshot) -> None:
        # The run's status line leads while it runs and comes last once it has ended.
        stamp = time.strftime("%H:%M:%S")
        ended = snap.status != "RUNNING"
        if not ended:
            self._status_change(stamp, snap)
        for job in snap.jobs:
            if self._seen.get(job.job_name, NOT_RUN) != job.status:
                stage = "" if job.stage_index is None else f"stage {job.stage_index + 1} "
                self._write(
                    f"{stamp} {stage}{job.job_name}: {job.status}{_detail(job, with_time=False)}\n"
                )
                self._seen[job.job_name] = job.status
        if ended:
            self._status_change(stamp, snap)

    def _status_change(self, stamp: str, snap: Snapshot) -> None:
        if snap.status != self._status:
            self._write(f"{stamp} execution {snap.execution_name}: {snap.status}\n")
            self._status = snap.status


def frame(snap: Snapshot) -> list[str]:
    """The whole view as lines: a header, then each stage and its jobs."""
    # Status first: a narrow terminal cuts the end of the line, never the news.
    lines = [
        f"{snap.status}  {format_duration(snap.elapsed_s)}  workflow {snap.workflow.workflow_id}  "
        f"execution {snap.execution_name}"
    ]
    by_stage: dict[int | None, list[JobStatus]] = {}
    for job in snap.jobs:
        by_stage.setdefault(job.stage_index, []).append(job)
    count = len(snap.workflow.workflow_stages)
    width = max((len(job.job_name) for job in snap.jobs), default=10)
    for index, stage in enumerate(snap.workflow.workflow_stages):
        kind = stage.execution_type if stage.enabled else f"{stage.execution_type}, disabled"
        lines.append(f"Stage {index + 1}/{count} ({kind})  {stage.stage_description}".rstrip())
        for job in by_stage.get(index, []):
            lines.append(
                f"  {job.status:<10} {job.job_name:<{width}}{_detail(job, with_time=True)}"
            )
    return lines


def compact_frame(snap: Snapshot) -> list[str]:
    """`frame` for big workflows: per stage the count of jobs in each status, and only the
    jobs that are running or did not succeed."""
    lines = frame(snap)[:1]
    count = len(snap.workflow.workflow_stages)
    notable = {schema.RUNNING, schema.FAILED, schema.TIMED_OUT, schema.CANCELLED}
    for index, stage in enumerate(snap.workflow.workflow_stages):
        jobs = [job for job in snap.jobs if job.stage_index == index]
        tally: dict[str, int] = {}
        for job in jobs:
            tally[job.status] = tally.get(job.status, 0) + 1
        counts = ", ".join(f"{status} {n}" for status, n in tally.items())
        lines.append(f"Stage {index + 1}/{count} ({stage.execution_type})  {counts}")
        lines += [
            f"  {job.status:<10} {job.job_name}{_detail(job, with_time=True)}"
            for job in jobs
            if job.status in notable
        ]
    return lines


def _detail(job: JobStatus, *, with_time: bool) -> str:
    parts = []
    exit_code = job.row.get(J.EXIT_CODE)
    if exit_code is not None and job.status != schema.COMPLETED:
        parts.append(f"exit {exit_code}")
    duration = job.row.get(J.DURATION_MS)
    if isinstance(duration, int | float) and job.status != schema.RUNNING:
        parts.append(format_duration(duration / 1000))
    elif (
        with_time
        and job.status == schema.RUNNING
        and (started := _parse_ts(job.row.get(J.EXECUTION_START_TS)))
    ):
        parts.append(format_duration(time.time() - started))
    attempt = job.row.get(J.ATTEMPT)
    if isinstance(attempt, int) and attempt > 1:
        parts.append(f"attempt {attempt}")
    if job.row.get(J.INSTANCE_ID) and with_time:
        parts.append(str(job.row[J.INSTANCE_ID]))
    return ("  " + "  ".join(parts)) if parts else ""


def _colour(line: str) -> str:
    if not line.startswith("  "):
        return f"\x1b[1m{line}\x1b[0m"
    word = line.split()[0]
    code = _COLOURS.get(word)
    return line.replace(word, f"\x1b[{code}m{word}\x1b[0m", 1) if code else line


def format_duration(seconds: float) -> str:
    """`35 ms`, `2.5 s`, `3m07s`, `1h05m`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _parse_ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class WaitResult:
    """How a watched run ended; `described` is None when the wait timed out."""

    described: dict[str, Any] | None
    last: Snapshot

    @property
    def timed_out(self) -> bool:
        return self.described is None


def wait_for_run(
    stack: Stack,
    workflow: Workflow,
    execution_name: str,
    view: ProgressView,
    *,
    timeout_s: float | None = None,
    poll_s: float = WAIT_POLL_S,
) -> WaitResult:
    """Show progress until the run ends (or `timeout_s` passes); the run itself goes on."""
    started = time.monotonic()
    arn = stack.execution_arn(execution_name)
    while True:
        described: dict[str, Any] = dict(stack.aws.sfn.describe_execution(executionArn=arn))
        elapsed = time.monotonic() - started
        snap = snapshot(stack, workflow, execution_name, described["status"], elapsed)
        view.show(snap)
        if described["status"] != "RUNNING":
            return WaitResult(described, snap)
        if timeout_s is not None and elapsed >= timeout_s:
            return WaitResult(None, snap)
        remaining = poll_s if timeout_s is None else min(poll_s, max(timeout_s - elapsed, 0.0))
        time.sleep(remaining)
