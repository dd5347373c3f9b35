"""Putting a config and starting a run, honouring the lock the state machine holds.

The state machine holds a lock on the config item (`running_execution_id`) while a run is
going, so these commands honour it: `put` replaces the config but keeps the lock, `start`
refuses while the holder runs and clears a lock whose holder ended without releasing it
(StopExecution ends a run without its Catch, so without the release).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import ClientError

from agent import schema
from agent.items import to_item
from agent.schema import Config as C
from agent.schema import WorkflowAudit as W
from cloud.aws import CloudError, is_error
from cloud.config import Workflow, load_workflow_file
from cloud.stack import Stack, input_workflow_id, lock_holder

EXECUTION_NAME_MAX: Final = 80
_EXECUTION_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_PUT_ATTEMPTS: Final = 5
_LOCK_NAMES: Final = {"#lock": C.RUNNING_EXECUTION_ID}
# What the workflow audit row should say of a run that ended without recording it.
_STATUS_OF_ENDED: Final = {
    "ABORTED": schema.CANCELLED,
    "TIMED_OUT": schema.TIMED_OUT,
    "FAILED": schema.FAILED,
    "SUCCEEDED": schema.COMPLETED,
}


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
        holder = lock_holder(current)
        request: dict[str, Any] = {
            "TableName": stack.names.config_table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#lock)",
            "ExpressionAttributeNames": _LOCK_NAMES,
        }
        if holder:
            request["Item"] = {**item, **to_item({C.RUNNING_EXECUTION_ID: holder})}
            request["ConditionExpression"] = "#lock = :lock"
            request["ExpressionAttributeValues"] = to_item({":lock": holder})
        try:
            with stack.deployed():
                stack.aws.dynamodb.put_item(**request)
        except ClientError as exc:
            if is_error(exc, "ConditionalCheckFailedException"):
                continue  # the lock changed between the read and the write: read again
            raise
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
    notes = _check_lock(stack, workflow_id, lock_holder(item))
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
    _update_unless_changed(
        stack,
        TableName=stack.names.config_table,
        Key=to_item({C.WORKFLOW_ID: workflow_id}),
        UpdateExpression="REMOVE #lock",
        ConditionExpression="#lock = :old",
        ExpressionAttributeNames=_LOCK_NAMES,
        ExpressionAttributeValues=to_item({":old": holder}),
    )
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
    Running: a row the state machine finished, or no row at all, is left as it is)."""
    stopped = described.get("stopDate") or dt.datetime.now(dt.UTC)
    values = {
        ":status": word,
        ":end": schema.iso_utc_ms(stopped.timestamp()),
        ":running": schema.RUNNING,
    }
    expression = "SET #status = :status, #end = :end"
    names = {"#status": W.EXECUTION_STATUS, "#end": W.EXECUTION_END_TS}
    for attribute in (W.ERROR, W.CAUSE):
        if described.get(attribute):
            values[f":{attribute}"] = str(described[attribute])
            names[f"#{attribute}"] = attribute
            expression += f", #{attribute} = :{attribute}"
    _update_unless_changed(
        stack,
        TableName=stack.names.workflow_audit_table,
        Key=to_item({W.WORKFLOW_EXECUTION_ID: name, W.WORKFLOW_ID: workflow_id}),
        UpdateExpression=expression,
        ConditionExpression="#status = :running",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=to_item(values),
    )


def _update_unless_changed(stack: Stack, **request: Any) -> None:
    """UpdateItem under a condition; a failed condition means someone else got there first."""
    try:
        stack.aws.dynamodb.update_item(**request)
    except ClientError as exc:
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
    ran = input_workflow_id(described)
    if ran != workflow_id:
        raise CloudError(
            f"--restart-of: execution {restart_of} ran workflow {ran!r}, not {workflow_id!r}"
        )
