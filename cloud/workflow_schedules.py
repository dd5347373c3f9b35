"""A workflow's EventBridge Scheduler schedule, kept in step with its config by `workflow put`.

The schedule is named after the workflow, in the stack's schedule group, and starts the state
machine itself through Scheduler's universal target for `sfn:StartExecution` (no Lambda). Its
request carries:

- the state machine's input contract, `{"workflow_id": ..., "restart_of": ""}`;
- an execution name of our own, `<workflow id, at most 43 characters>-<Scheduler's execution
  id>`: unique per invocation (a UUID), the same on each retry of that invocation, so a retry
  after a start that did succeed gets the same execution back instead of a second run
  (StartExecution is idempotent for a STANDARD machine given the same name and input);
- a retry policy and the stack's dead-letter queue for starts that still fail.

The scheduler assumes the stack's scheduler role: StartExecution on this state machine and
SendMessage on the queue, nothing else (cloud/iam.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from botocore.exceptions import ClientError

from cloud import iam
from cloud.aws import CloudError, is_error
from cloud.config import Workflow
from cloud.runs import EXECUTION_NAME_MAX
from cloud.stack import Stack

# Scheduler's universal target for the Step Functions API call.
START_EXECUTION_TARGET: Final = "arn:aws:scheduler:::aws-sdk:sfn:startExecution"
# A context attribute Scheduler fills in at each invocation.
EXECUTION_ID_PLACEHOLDER: Final = "<aws.scheduler.execution-id>"
_EXECUTION_ID_LENGTH: Final = 36  # a UUID
RETRY_ATTEMPTS: Final = 5
# A start more than an hour late goes to the dead-letter queue rather than run.
MAX_EVENT_AGE_S: Final = 3600
_MISSING: Final = "ResourceNotFoundException"

Change = Literal["created", "updated", "deleted"]


@dataclass(frozen=True)
class ScheduleChange:
    change: Change
    name: str
    expression: str


def execution_name_template(workflow_id: str) -> str:
    """The execution name Scheduler fills in (within Step Functions' 80 characters)."""
    keep = EXECUTION_NAME_MAX - 1 - _EXECUTION_ID_LENGTH
    base = "".join(c if c.isalnum() or c in "-_" else "_" for c in workflow_id)
    return f"{base[:keep]}-{EXECUTION_ID_PLACEHOLDER}"


def desired_schedule(stack: Stack, workflow: Workflow) -> dict[str, Any]:
    """CreateSchedule/UpdateSchedule parameters for a workflow that has a schedule."""
    schedule = workflow.schedule
    assert schedule is not None
    account = stack.aws.account
    names = stack.names
    request = {
        "StateMachineArn": stack.state_machine_arn,
        "Name": execution_name_template(workflow.workflow_id),
        "Input": json.dumps({"workflow_id": workflow.workflow_id, "restart_of": ""}),
    }
    return {
        "Name": workflow.workflow_id,
        "GroupName": names.schedule_group,
        "Description": f"Starts workflow {workflow.workflow_id} ({names.state_machine})",
        "ScheduleExpression": schedule.expression,
        "ScheduleExpressionTimezone": schedule.timezone,
        "State": "ENABLED" if schedule.enabled else "DISABLED",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "ActionAfterCompletion": "NONE",
        "Target": {
            "Arn": START_EXECUTION_TARGET,
            "RoleArn": account.arn("iam", f"role/{names.scheduler_role}", regional=False),
            "Input": json.dumps(request),
            "RetryPolicy": {
                "MaximumRetryAttempts": RETRY_ATTEMPTS,
                "MaximumEventAgeInSeconds": MAX_EVENT_AGE_S,
            },
            "DeadLetterConfig": {"Arn": iam.queue_arn(account, names.schedule_dlq)},
        },
    }


def current_schedule(stack: Stack, workflow_id: str) -> dict[str, Any] | None:
    """The workflow's schedule as Scheduler has it; None when there is none."""
    scheduler = stack.aws.client("scheduler")
    try:
        return dict(scheduler.get_schedule(Name=workflow_id, GroupName=stack.names.schedule_group))
    except ClientError as exc:
        if is_error(exc, _MISSING):
            return None
        raise


def sync_schedule(stack: Stack, workflow: Workflow) -> ScheduleChange | None:
    """Create, update or delete the workflow's schedule to match its config; None when it
    matches already."""
    scheduler = stack.aws.client("scheduler")
    current = current_schedule(stack, workflow.workflow_id)
    if workflow.schedule is None:
        if current is None:
            return None
        scheduler.delete_schedule(Name=workflow.workflow_id, GroupName=stack.names.schedule_group)
        return ScheduleChange("deleted", workflow.workflow_id, str(current["ScheduleExpression"]))
    wanted = desired_schedule(stack, workflow)
    change: Change
    if current is None:
        change = "created"
        call = scheduler.create_schedule
    elif _differs(current, wanted):
        change = "updated"
        call = scheduler.update_schedule
    else:
        return None
    try:
        call(**wanted)
    except ClientError as exc:
        if is_error(exc, _MISSING):
            raise CloudError(
                f"stack {stack.names.stack_name!r} has no schedule group "
                f"{stack.names.schedule_group} (deployed by an older version): "
                f"{stack.deploy_hint}"
            ) from None
        raise
    return ScheduleChange(change, workflow.workflow_id, wanted["ScheduleExpression"])


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for key, value in wanted.items():
        if key == "Target":
            if _target(current.get(key)) != _target(value):
                return True
        elif current.get(key) != value:
            return True
    return False


def _target(target: Any) -> Any:
    if not isinstance(target, dict):
        return target
    try:
        request = json.loads(target.get("Input") or "null")
    except json.JSONDecodeError:
        request = target.get("Input")
    return {**target, "Input": request}
