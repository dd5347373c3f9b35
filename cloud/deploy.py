"""`rsql-cloud deploy` and `destroy`: plan, then apply (after AWS Chalice's deployer).

`RemoteState` (cloud/remote.py) says what exists; each resource of `DesiredStack.resources()`
(cloud/resources.py) compares that with what it should be and returns the `Instruction`s
that close the gap. Deploy walks the resources in dependency order, destroy walks the same
list backwards. The executor runs the plan. So `--dry-run` prints the same plan a real run
carries out, a second deploy plans nothing and says so, and tests check plans against a fake
`RemoteState` without any AWS.

Every resource name derives from the stack name (`cloud.names.StackNames`), every ARN from
the names and the account, so a plan never needs the answer of an earlier call.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from cloud import iam, tables
from cloud.aws import Account, Aws, is_error
from cloud.monitoring import Alarming, monitoring_resources
from cloud.names import StackNames
from cloud.remote import AwsRemoteState, RemoteState
from cloud.resources import (
    METRICS_LOG_RETENTION_DAYS,
    Activity,
    Instruction,
    LogGroup,
    Ref,
    Resource,
    Role,
    StateMachine,
    Table,
    Topic,
)
from cloud.resources_scheduling import Queue, ScheduleGroup
from cloud.statemachine import render_definition

STACK_TAG: Final = "rsql:stack"


@dataclass(frozen=True)
class StackOutputs:
    """Names and ARNs of a deployed stack (`deploy --json`)."""

    stack_name: str
    config_table: str
    job_audit_table: str
    workflow_audit_table: str
    activity_arn: str
    state_machine_arn: str
    log_group: str
    metrics_log_group: str
    topic_arn: str
    role_arn: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class DesiredStack:
    """What a deployed stack consists of, with every ARN known before anything exists. With
    `alarming`, the alarms, their topic and the dashboard too (`deploy --alarms`); without,
    deploy leaves those as they are."""

    names: StackNames
    account: Account
    alarming: Alarming | None = None

    def resources(self) -> list[Resource]:
        """Every resource of the stack, each after the ones it uses."""
        core = self._core_resources()
        if self.alarming is None:
            return core
        return [*core, *monitoring_resources(self, self.alarming)]

    def _core_resources(self) -> list[Resource]:
        names = self.names
        return [
            *(Table(self, spec) for spec in tables.table_specs(names)),
            Activity(self, names.activity),
            LogGroup(self, names.log_group),
            LogGroup(self, names.metrics_log_group, METRICS_LOG_RETENTION_DAYS),
            Topic(self, names.topic),
            Role(
                self,
                names.state_machine_role,
                trust=iam.trust_policy(),
                policies={iam.STATE_MACHINE_POLICY_NAME: self.role_policy},
                description=f"Assumed by the {names.state_machine} state machine",
            ),
            StateMachine(self, names.state_machine),
            # Workflow schedules (`workflow put` keeps one per scheduled workflow).
            Queue(self, names.schedule_dlq),
            Role(
                self,
                names.scheduler_role,
                trust=iam.trust_policy(iam.SCHEDULER_PRINCIPAL, self.account),
                policies={iam.SCHEDULER_POLICY_NAME: self.scheduler_policy},
                description=f"Assumed by EventBridge Scheduler to start {names.state_machine}",
            ),
            ScheduleGroup(self, names.schedule_group),
        ]

    @property
    def activity_arn(self) -> str:
        return iam.activity_arn(self.account, self.names)

    @property
    def topic_arn(self) -> str:
        return iam.topic_arn(self.account, self.names)

    @property
    def role_arn(self) -> str:
        return self.account.arn("iam", f"role/{self.names.state_machine_role}", regional=False)

    @property
    def state_machine_arn(self) -> str:
        return iam.state_machine_arn(self.account, self.names)

    @property
    def scheduler_role_arn(self) -> str:
        return self.account.arn("iam", f"role/{self.names.scheduler_role}", regional=False)

    @property
    def schedule_dlq_arn(self) -> str:
        return iam.queue_arn(self.account, self.names.schedule_dlq)

    @property
    def scheduler_policy(self) -> dict[str, Any]:
        return iam.scheduler_policy(self.names, self.account)

    @functools.cached_property
    def definition(self) -> str:
        return render_definition(self.names, self.activity_arn, self.topic_arn)

    @functools.cached_property
    def role_policy(self) -> dict[str, Any]:
        return iam.state_machine_policy(json.loads(self.definition), self.names, self.account)

    def tags(self, *, lower: bool = False) -> list[dict[str, str]]:
        """The stack tag as DynamoDB, SNS and IAM take it, or (`lower`) as Step Functions."""
        key, value = ("key", "value") if lower else ("Key", "Value")
        return [{key: STACK_TAG, value: self.names.stack_name}]

    @property
    def tag_map(self) -> dict[str, str]:
        """The stack tag as CloudWatch Logs takes it."""
        return {STACK_TAG: self.names.stack_name}

    def outputs(self) -> StackOutputs:
        return StackOutputs(
            stack_name=self.names.stack_name,
            config_table=self.names.config_table,
            job_audit_table=self.names.job_audit_table,
            workflow_audit_table=self.names.workflow_audit_table,
            activity_arn=self.activity_arn,
            state_machine_arn=self.state_machine_arn,
            log_group=self.names.log_group,
            metrics_log_group=self.names.metrics_log_group,
            topic_arn=self.topic_arn,
            role_arn=self.role_arn,
        )


# -- planning ------------------------------------------------------------------------------------


def plan_deploy(stack: DesiredStack, remote: RemoteState) -> list[Instruction]:
    """The calls that turn what exists into the desired stack; [] when it is up to date."""
    plan: list[Instruction] = []
    for resource in stack.resources():
        plan += resource.plan(remote, plan)
    return plan


def plan_destroy(stack: DesiredStack, remote: RemoteState, *, purge: bool) -> list[Instruction]:
    """Delete what exists of the stack, users before what they use; tables only with purge."""
    plan: list[Instruction] = []
    for resource in reversed(stack.resources()):
        if purge or not resource.keeps_data:
            plan += resource.plan_delete(remote)
    return plan


# -- applying ------------------------------------------------------------------------------------


def execute(aws: Aws, plan: list[Instruction], say: Callable[[str], None]) -> None:
    """Run the plan in order, saying each step before it runs."""
    answers: dict[str, dict[str, Any]] = {}
    for step in plan:
        say(step.message)
        client = aws.client(step.service)
        if step.operation:
            params = _resolved(step.params, answers)
            answer = _call_with_retry(getattr(client, step.operation), params, step)
            if step.produces:
                answers[step.produces] = answer
        if step.waiter:
            waiter = client.get_waiter(step.waiter)
            waiter.wait(**step.waiter_params, WaiterConfig=tables.WAITER_CONFIG)


def _resolved(value: Any, answers: dict[str, dict[str, Any]]) -> Any:
    """`value` with every `Ref` replaced by the answer it names."""
    if isinstance(value, Ref):
        return answers[value.step][value.key]
    if isinstance(value, dict):
        return {key: _resolved(item, answers) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolved(item, answers) for item in value]
    return value


def _call_with_retry(call: Callable[..., Any], params: dict[str, Any], step: Instruction) -> Any:
    deadline = time.monotonic() + step.retry_for_s
    while True:
        try:
            return call(**params)
        except ClientError as exc:
            if not is_error(exc, *step.retry_codes) or time.monotonic() > deadline:
                raise
            time.sleep(step.retry_delay_s)


# -- the commands' logic -------------------------------------------------------------------------


def desired_stack(aws: Aws, names: StackNames, alarming: Alarming | None = None) -> DesiredStack:
    return DesiredStack(names=names, account=aws.account, alarming=alarming)


def deploy(
    aws: Aws,
    names: StackNames,
    *,
    alarming: Alarming | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> tuple[list[Instruction], StackOutputs]:
    """Plan and (unless dry_run) apply; returns the plan and the stack's outputs."""
    stack = desired_stack(aws, names, alarming)
    plan = plan_deploy(stack, AwsRemoteState(aws))
    if not dry_run:
        execute(aws, plan, say)
    return plan, stack.outputs()


def destroy(
    aws: Aws,
    names: StackNames,
    *,
    purge: bool,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> list[Instruction]:
    """Plan the deletion and (unless dry_run) apply it; returns the plan."""
    # Whatever `deploy --alarms` may have added goes too.
    stack = desired_stack(aws, names, Alarming.everything())
    plan = plan_destroy(stack, AwsRemoteState(aws), purge=purge)
    if not dry_run:
        execute(aws, plan, say)
    return plan
