"""`rsql-cloud deploy` and `destroy`: plan, then apply (after AWS Chalice's deployer).

`RemoteState` answers "does this resource exist, and with what values", each question asked
of AWS at most once per run. The planner compares that with the desired stack and returns a
list of `Instruction`s, each one API call paired with the message an operator reads
("Creating DynamoDB table: rsql-config"). The executor runs the list. So `--dry-run` prints
the same plan a real run carries out, a second deploy plans nothing and says so, and tests
check plans against a fake `RemoteState` without any AWS.

Every resource name derives from the stack name (`cloud.names.StackNames`), every ARN from
the names and the account, so a plan never needs the answer of an earlier call.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

from botocore.exceptions import ClientError

from cloud import iam, tables
from cloud.aws import Account, Aws, CloudError, is_error
from cloud.names import StackNames
from cloud.statemachine import render_definition

LOG_RETENTION_DAYS: Final = 30
STACK_TAG: Final = "rsql:stack"
STATE_MACHINE_TYPE: Final = "STANDARD"
# A role IAM has just created takes a few seconds before Step Functions may assume it; a
# state machine AWS is still deleting blocks a new one of the same name for up to a minute.
_ROLE_PROPAGATION_CODES: Final = frozenset({"AccessDeniedException", "InvalidArn"})
_STATE_MACHINE_DELETING: Final = "StateMachineDeleting"
_RETRY_FOR_S: Final = 90.0
_RETRY_DELAY_S: Final = 3.0


class DeployError(CloudError):
    """The stack cannot be deployed as it is (a table with other keys, an EXPRESS machine)."""


@dataclass(frozen=True)
class Instruction:
    """One API call and the message that says what it does; optionally a waiter after it."""

    message: str
    service: str
    operation: str | None  # None: only wait
    params: dict[str, Any] = field(default_factory=dict)
    waiter: str | None = None
    waiter_params: dict[str, Any] = field(default_factory=dict)
    # Error codes that mean "not yet" rather than "no": retried for a bounded time.
    retry_codes: frozenset[str] = frozenset()


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
    topic_arn: str
    role_arn: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class DesiredStack:
    """What a deployed stack consists of, with every ARN known before anything exists."""

    names: StackNames
    account: Account

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
        return self.account.arn("states", f"stateMachine:{self.names.state_machine}")

    @functools.cached_property
    def definition(self) -> str:
        return render_definition(self.names, self.activity_arn, self.topic_arn)

    @functools.cached_property
    def role_policy(self) -> dict[str, Any]:
        return iam.state_machine_policy(json.loads(self.definition), self.names, self.account)

    def outputs(self) -> StackOutputs:
        return StackOutputs(
            stack_name=self.names.stack_name,
            config_table=self.names.config_table,
            job_audit_table=self.names.job_audit_table,
            workflow_audit_table=self.names.workflow_audit_table,
            activity_arn=self.activity_arn,
            state_machine_arn=self.state_machine_arn,
            log_group=self.names.log_group,
            topic_arn=self.topic_arn,
            role_arn=self.role_arn,
        )


class RemoteState(Protocol):
    """What exists in AWS; None for "not there"."""

    def table(self, name: str) -> dict[str, Any] | None: ...
    def activity(self, arn: str) -> dict[str, Any] | None: ...
    def log_group(self, name: str) -> dict[str, Any] | None: ...
    def topic(self, arn: str) -> dict[str, Any] | None: ...
    def role(self, name: str) -> dict[str, Any] | None: ...
    def role_policy(self, role: str, policy: str) -> dict[str, Any] | None: ...
    def state_machine(self, arn: str) -> dict[str, Any] | None: ...


class AwsRemoteState:
    """`RemoteState` backed by Describe/Get calls, each answer cached for the run."""

    def __init__(self, aws: Aws) -> None:
        self._aws = aws
        self._cache: dict[tuple[str, ...], dict[str, Any] | None] = {}

    def _ask(
        self, key: tuple[str, ...], call: Callable[[], dict[str, Any]], *missing: str
    ) -> dict[str, Any] | None:
        if key not in self._cache:
            try:
                self._cache[key] = call()
            except ClientError as exc:
                if not is_error(exc, *missing):
                    raise
                self._cache[key] = None
        return self._cache[key]

    def table(self, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            return dict(self._aws.dynamodb.describe_table(TableName=name)["Table"])

        return self._ask(("table", name), describe, "ResourceNotFoundException")

    def activity(self, arn: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            return dict(self._aws.sfn.describe_activity(activityArn=arn))

        return self._ask(("activity", arn), describe, "ActivityDoesNotExist")

    def log_group(self, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            pages = self._aws.logs.get_paginator("describe_log_groups")
            for page in pages.paginate(logGroupNamePrefix=name):
                for group in page["logGroups"]:
                    if group.get("logGroupName") == name:
                        return dict(group)
            raise ClientError({"Error": {"Code": "NotFound"}}, "DescribeLogGroups")

        return self._ask(("log_group", name), describe, "NotFound")

    def topic(self, arn: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            return dict(self._aws.sns.get_topic_attributes(TopicArn=arn)["Attributes"])

        return self._ask(("topic", arn), describe, "NotFound")

    def role(self, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            return dict(self._aws.iam.get_role(RoleName=name)["Role"])

        return self._ask(("role", name), describe, "NoSuchEntity")

    def role_policy(self, role: str, policy: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            answer = self._aws.iam.get_role_policy(RoleName=role, PolicyName=policy)
            # botocore decodes IAM's URL-encoded JSON into a dict.
            document: Any = _parsed(answer["PolicyDocument"])
            return dict(document) if isinstance(document, dict) else {}

        return self._ask(("role_policy", role, policy), describe, "NoSuchEntity")

    def state_machine(self, arn: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            return dict(self._aws.sfn.describe_state_machine(stateMachineArn=arn))

        return self._ask(("state_machine", arn), describe, "StateMachineDoesNotExist")


# -- planning ------------------------------------------------------------------------------------


def plan_deploy(stack: DesiredStack, remote: RemoteState) -> list[Instruction]:
    """The calls that turn what exists into the desired stack; [] when it is up to date."""
    plan: list[Instruction] = []
    for spec in tables.table_specs(stack.names):
        plan += _plan_table(spec, remote.table(spec.name), _tags(stack))
    if remote.activity(stack.activity_arn) is None:
        plan.append(
            Instruction(
                f"Creating Step Functions activity: {stack.names.activity}",
                "stepfunctions",
                "create_activity",
                {"name": stack.names.activity, "tags": _tags(stack, lower=True)},
            )
        )
    plan += _plan_log_group(stack, remote.log_group(stack.names.log_group))
    if remote.topic(stack.topic_arn) is None:
        plan.append(
            Instruction(
                f"Creating SNS topic: {stack.names.topic}",
                "sns",
                "create_topic",
                {"Name": stack.names.topic, "Tags": _tags(stack)},
            )
        )
    role_plan = _plan_role(stack, remote)
    plan += role_plan
    plan += _plan_state_machine(stack, remote, role_changed=bool(role_plan))
    return plan


def _tags(stack: DesiredStack, *, lower: bool = False) -> list[dict[str, str]]:
    key, value = ("key", "value") if lower else ("Key", "Value")
    return [{key: STACK_TAG, value: stack.names.stack_name}]


def _plan_table(
    spec: tables.TableSpec, described: dict[str, Any] | None, tags: list[dict[str, str]]
) -> list[Instruction]:
    active = {"TableName": spec.name}
    create = Instruction(
        f"Creating DynamoDB table: {spec.name}",
        "dynamodb",
        "create_table",
        spec.create_params(tags),
        waiter="table_exists",
        waiter_params=active,
    )
    if described is None:
        return [create]
    if described.get("TableStatus") == "DELETING":
        # Left by a `destroy --purge` a moment ago: let it go, then create it again.
        gone = Instruction(
            f"Waiting for DynamoDB table to finish deleting: {spec.name}",
            "dynamodb",
            None,
            waiter="table_not_exists",
            waiter_params={"TableName": spec.name},
        )
        return [gone, create]
    if problem := spec.key_mismatch(described):
        raise DeployError(problem)
    if tables.billing_mode(described) != tables.BILLING_MODE:
        return [
            Instruction(
                f"Updating DynamoDB table to on-demand capacity: {spec.name}",
                "dynamodb",
                "update_table",
                {"TableName": spec.name, "BillingMode": tables.BILLING_MODE},
                waiter="table_exists",
                waiter_params=active,
            )
        ]
    return []


def _plan_log_group(stack: DesiredStack, described: dict[str, Any] | None) -> list[Instruction]:
    name = stack.names.log_group
    retention = Instruction(
        f"Setting log retention to {LOG_RETENTION_DAYS} days: {name}",
        "logs",
        "put_retention_policy",
        {"logGroupName": name, "retentionInDays": LOG_RETENTION_DAYS},
    )
    if described is None:
        create = Instruction(
            f"Creating CloudWatch log group: {name}",
            "logs",
            "create_log_group",
            {"logGroupName": name, "tags": {STACK_TAG: stack.names.stack_name}},
        )
        return [create, retention]
    if described.get("retentionInDays") != LOG_RETENTION_DAYS:
        return [retention]
    return []


def _plan_role(stack: DesiredStack, remote: RemoteState) -> list[Instruction]:
    role_name = stack.names.state_machine_role
    trust = iam.trust_policy()
    policy = stack.role_policy
    plan = []
    role = remote.role(role_name)
    if role is None:
        plan.append(
            Instruction(
                f"Creating IAM role: {role_name}",
                "iam",
                "create_role",
                {
                    "RoleName": role_name,
                    "AssumeRolePolicyDocument": json.dumps(trust),
                    "Description": f"Assumed by the {stack.names.state_machine} state machine",
                    "Tags": _tags(stack),
                },
            )
        )
    elif _canonical(role.get("AssumeRolePolicyDocument")) != _canonical(trust):
        plan.append(
            Instruction(
                f"Updating trust policy of IAM role: {role_name}",
                "iam",
                "update_assume_role_policy",
                {"RoleName": role_name, "PolicyDocument": json.dumps(trust)},
            )
        )
    current = None if role is None else remote.role_policy(role_name, iam.STATE_MACHINE_POLICY_NAME)
    if current is None or _canonical(current) != _canonical(policy):
        verb = "Creating" if current is None else "Updating"
        plan.append(
            Instruction(
                f"{verb} policy for IAM role: {role_name}",
                "iam",
                "put_role_policy",
                {
                    "RoleName": role_name,
                    "PolicyName": iam.STATE_MACHINE_POLICY_NAME,
                    "PolicyDocument": json.dumps(policy),
                },
            )
        )
    return plan


def _plan_state_machine(
    stack: DesiredStack, remote: RemoteState, *, role_changed: bool
) -> list[Instruction]:
    name = stack.names.state_machine
    definition = stack.definition
    retry = _ROLE_PROPAGATION_CODES if role_changed else frozenset()
    described = remote.state_machine(stack.state_machine_arn)
    if described is None or described.get("status") == "DELETING":
        return [
            Instruction(
                f"Creating state machine: {name}",
                "stepfunctions",
                "create_state_machine",
                {
                    "name": name,
                    "definition": definition,
                    "roleArn": stack.role_arn,
                    "type": STATE_MACHINE_TYPE,
                    "tags": _tags(stack, lower=True),
                },
                retry_codes=retry | {_STATE_MACHINE_DELETING},
            )
        ]
    if described.get("type", STATE_MACHINE_TYPE) != STATE_MACHINE_TYPE:
        raise DeployError(
            f"state machine {name} exists as type {described.get('type')}, not "
            f"{STATE_MACHINE_TYPE}: delete it (`rsql-cloud destroy`) and deploy again"
        )
    changes: dict[str, str] = {}
    what = []
    if _parsed(described.get("definition")) != json.loads(definition):
        changes["definition"] = definition
        what.append("definition")
    if described.get("roleArn") != stack.role_arn:
        changes["roleArn"] = stack.role_arn
        what.append("role")
    if not changes:
        return []
    return [
        Instruction(
            f"Updating state machine {' and '.join(what)}: {name}",
            "stepfunctions",
            "update_state_machine",
            {"stateMachineArn": stack.state_machine_arn, **changes},
            retry_codes=retry,
        )
    ]


def plan_destroy(stack: DesiredStack, remote: RemoteState, *, purge: bool) -> list[Instruction]:
    """Delete what exists of the stack, users before what they use; tables only with purge."""
    names = stack.names
    plan: list[Instruction] = []
    machine = remote.state_machine(stack.state_machine_arn)
    if machine is not None and machine.get("status") != "DELETING":
        plan.append(
            Instruction(
                f"Deleting state machine: {names.state_machine}",
                "stepfunctions",
                "delete_state_machine",
                {"stateMachineArn": stack.state_machine_arn},
            )
        )
    if remote.activity(stack.activity_arn) is not None:
        plan.append(
            Instruction(
                f"Deleting Step Functions activity: {names.activity}",
                "stepfunctions",
                "delete_activity",
                {"activityArn": stack.activity_arn},
            )
        )
    role = names.state_machine_role
    if remote.role(role) is not None:
        if remote.role_policy(role, iam.STATE_MACHINE_POLICY_NAME) is not None:
            plan.append(
                Instruction(
                    f"Deleting policy of IAM role: {role}",
                    "iam",
                    "delete_role_policy",
                    {"RoleName": role, "PolicyName": iam.STATE_MACHINE_POLICY_NAME},
                )
            )
        plan.append(
            Instruction(f"Deleting IAM role: {role}", "iam", "delete_role", {"RoleName": role})
        )
    if remote.topic(stack.topic_arn) is not None:
        plan.append(
            Instruction(
                f"Deleting SNS topic: {names.topic}",
                "sns",
                "delete_topic",
                {"TopicArn": stack.topic_arn},
            )
        )
    if remote.log_group(names.log_group) is not None:
        plan.append(
            Instruction(
                f"Deleting CloudWatch log group: {names.log_group}",
                "logs",
                "delete_log_group",
                {"logGroupName": names.log_group},
            )
        )
    if purge:
        for spec in tables.table_specs(names):
            described = remote.table(spec.name)
            if described is not None and described.get("TableStatus") != "DELETING":
                plan.append(
                    Instruction(
                        f"Deleting DynamoDB table: {spec.name}",
                        "dynamodb",
                        "delete_table",
                        {"TableName": spec.name},
                        waiter="table_not_exists",
                        waiter_params={"TableName": spec.name},
                    )
                )
    return plan


def _parsed(definition: Any) -> Any:
    try:
        return json.loads(definition) if isinstance(definition, str) else definition
    except json.JSONDecodeError:
        return None


def _canonical(document: Any) -> Any:
    """A policy document in a form where equal policies compare equal: IAM may hand back a
    single Action or Resource as a string, and the order of list entries carries no meaning."""
    if isinstance(document, str):
        document = _parsed(document)
    if isinstance(document, dict):
        return {key: _canonical_value(key, value) for key, value in document.items()}
    return document


def _canonical_value(key: str, value: Any) -> Any:
    if key in ("Action", "Resource", "NotAction", "NotResource") and isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        return _canonical(value)
    if isinstance(value, list):
        items = [_canonical(v) if isinstance(v, dict) else v for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return value


# -- applying ------------------------------------------------------------------------------------


def execute(aws: Aws, plan: list[Instruction], say: Callable[[str], None]) -> None:
    """Run the plan in order, saying each step before it runs."""
    for step in plan:
        say(step.message)
        client = aws.client(step.service)
        if step.operation:
            _call_with_retry(getattr(client, step.operation), step)
        if step.waiter:
            waiter = client.get_waiter(step.waiter)
            waiter.wait(**step.waiter_params, WaiterConfig=tables.WAITER_CONFIG)


def _call_with_retry(call: Callable[..., Any], step: Instruction) -> Any:
    deadline = time.monotonic() + _RETRY_FOR_S
    while True:
        try:
            return call(**step.params)
        except ClientError as exc:
            if not is_error(exc, *step.retry_codes) or time.monotonic() > deadline:
                raise
            time.sleep(_RETRY_DELAY_S)


# -- the commands' logic -------------------------------------------------------------------------


def desired_stack(aws: Aws, names: StackNames) -> DesiredStack:
    return DesiredStack(names=names, account=aws.account)


def deploy(
    aws: Aws,
    names: StackNames,
    *,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> tuple[list[Instruction], StackOutputs]:
    """Plan and (unless dry_run) apply; returns the plan and the stack's outputs."""
    stack = desired_stack(aws, names)
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
    stack = desired_stack(aws, names)
    plan = plan_destroy(stack, AwsRemoteState(aws), purge=purge)
    if not dry_run:
        execute(aws, plan, say)
    return plan
