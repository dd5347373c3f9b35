"""The stack's resources, each a model that plans its own create or update and its own delete
(after AWS Chalice's deployer and its ResourceSweeper).

`DesiredStack.resources()` lists them once, in dependency order: deploy walks the list
forwards, destroy walks it backwards, so a new resource is added in one place and both
commands know it. A plan is a list of `Instruction`s, each one API call paired with the
message an operator reads ("Creating DynamoDB table: rsql-config").
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final

from cloud import tables
from cloud.aws import CloudError
from cloud.remote import RemoteState, parsed

if TYPE_CHECKING:
    from cloud.deploy import DesiredStack

LOG_RETENTION_DAYS: Final = 30
# The agents' metric lines only need to live until CloudWatch has extracted the metrics.
METRICS_LOG_RETENTION_DAYS: Final = 7
STATE_MACHINE_TYPE: Final = "STANDARD"
# A role IAM has just created takes a few seconds before Step Functions may assume it; a
# state machine AWS is still deleting blocks a new one of the same name for up to a minute.
_ROLE_PROPAGATION_CODES: Final = frozenset({"AccessDeniedException", "InvalidArn"})
_STATE_MACHINE_DELETING: Final = "StateMachineDeleting"
_DELETING: Final = "DELETING"
# Inline policies deploy writes are named rsql-*: others on a role are an operator's.
_OUR_POLICY_PREFIX: Final = "rsql-"


class DeployError(CloudError):
    """The stack cannot be deployed as it is (a table with other keys, an EXPRESS machine)."""


@dataclass(frozen=True)
class Ref:
    """A value only AWS can tell, from the answer of an earlier step of the same plan (a
    scaling policy's ARN has a generated id): that step `produces` it under `step`."""

    step: str
    key: str

    def __str__(self) -> str:
        return f"<{self.key} of {self.step}>"


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
    # How long to keep retrying those, and how long between tries.
    retry_for_s: float = 90.0
    retry_delay_s: float = 3.0
    # The name later steps' `Ref`s use for this step's answer.
    produces: str | None = None


class Resource(ABC):
    """One resource of the stack: what exists of it, and the calls to create, update or
    delete it."""

    kind: ClassVar[str]  # as messages name it: "DynamoDB table"
    service: ClassVar[str]  # the boto3 client that manages it
    # Where its description says it is going away (None: it is gone at once).
    status_key: ClassVar[str | None] = None
    # Holds data nobody can recreate: `destroy` deletes it only with --purge.
    keeps_data: ClassVar[bool] = False

    def __init__(self, stack: DesiredStack, name: str) -> None:
        self.stack = stack
        self.name = name

    @abstractmethod
    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        """What exists of it; None when nothing does."""

    @abstractmethod
    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        """The calls that make it as desired ([] when it is); `earlier` is the plan so far."""

    @abstractmethod
    def deletion(self, remote: RemoteState) -> list[Instruction]:
        """The calls that delete it, knowing it exists."""

    def plan_delete(self, remote: RemoteState) -> list[Instruction]:
        """The calls that delete what exists of it ([] when nothing does, or it is going)."""
        described = self.describe(remote)
        if described is None or self.going(described):
            return []
        return self.deletion(remote)

    def going(self, described: dict[str, Any]) -> bool:
        """Whether AWS is deleting it already (a name it cannot reuse for a while yet)."""
        return self.status_key is not None and described.get(self.status_key) == _DELETING

    def step(self, what: str, operation: str | None, params: Any, **options: Any) -> Instruction:
        """An instruction on this resource, said as "<what>: <name>"."""
        return Instruction(f"{what}: {self.name}", self.service, operation, params, **options)


class Table(Resource):
    kind = "DynamoDB table"
    service = "dynamodb"
    status_key = "TableStatus"
    keeps_data = True

    def __init__(self, stack: DesiredStack, spec: tables.TableSpec) -> None:
        super().__init__(stack, spec.name)
        self.spec = spec

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.table(self.name)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        key = {"TableName": self.name}
        create = self.step(
            f"Creating {self.kind}",
            "create_table",
            self.spec.create_params(self.stack.tags()),
            waiter="table_exists",
            waiter_params=key,
        )
        described = self.describe(remote)
        if described is None:
            return [create]
        if self.going(described):
            # Left by a `destroy --purge` a moment ago: let it go, then create it again.
            what = f"Waiting for {self.kind} to finish deleting"
            return [self.step(what, None, {}, waiter="table_not_exists", waiter_params=key), create]
        if problem := self.spec.key_mismatch(described):
            raise DeployError(problem)
        plan = []
        if tables.billing_mode(described) != tables.BILLING_MODE:
            what = f"Updating {self.kind} to on-demand capacity"
            billing = {**key, "BillingMode": tables.BILLING_MODE}
            plan.append(self.step(what, "update_table", billing, **self._until_active()))
        # A table from before an index existed gets it in place (one index per UpdateTable, as
        # DynamoDB allows). The wait ends when the table is ACTIVE; the index may still be
        # backfilling a while after that, and its readers fall back to a Scan meanwhile.
        for index in self.spec.missing_indexes(described):
            params: dict[str, Any] = {
                **key,
                "AttributeDefinitions": self.spec.attribute_definitions(index),
                "GlobalSecondaryIndexUpdates": [{"Create": index.create_params()}],
            }
            what = f"Creating index {index.name} of {self.kind}"
            plan.append(self.step(what, "update_table", params, **self._until_active()))
        return plan

    def _until_active(self) -> dict[str, Any]:
        return {"waiter": "table_exists", "waiter_params": {"TableName": self.name}}

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        key = {"TableName": self.name}
        return [
            self.step(
                f"Deleting {self.kind}",
                "delete_table",
                key,
                waiter="table_not_exists",
                waiter_params=key,
            )
        ]


class Activity(Resource):
    kind = "Step Functions activity"
    service = "stepfunctions"

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.activity(self.stack.activity_arn)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        if self.describe(remote) is not None:
            return []
        params = {"name": self.name, "tags": self.stack.tags(lower=True)}
        return [self.step(f"Creating {self.kind}", "create_activity", params)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        params = {"activityArn": self.stack.activity_arn}
        return [self.step(f"Deleting {self.kind}", "delete_activity", params)]


class LogGroup(Resource):
    kind = "CloudWatch log group"
    service = "logs"

    def __init__(
        self, stack: DesiredStack, name: str, retention_days: int = LOG_RETENTION_DAYS
    ) -> None:
        super().__init__(stack, name)
        self.retention_days = retention_days

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.log_group(self.name)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        retention = self.step(
            f"Setting log retention to {self.retention_days} days",
            "put_retention_policy",
            {"logGroupName": self.name, "retentionInDays": self.retention_days},
        )
        described = self.describe(remote)
        if described is None:
            params = {"logGroupName": self.name, "tags": self.stack.tag_map}
            return [self.step(f"Creating {self.kind}", "create_log_group", params), retention]
        if described.get("retentionInDays") != self.retention_days:
            return [retention]
        return []

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        params = {"logGroupName": self.name}
        return [self.step(f"Deleting {self.kind}", "delete_log_group", params)]


class Topic(Resource):
    kind = "SNS topic"
    service = "sns"

    @property
    def arn(self) -> str:
        return self.stack.account.arn("sns", self.name)

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.topic(self.arn)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        if self.describe(remote) is not None:
            return []
        params = {"Name": self.name, "Tags": self.stack.tags()}
        return [self.step(f"Creating {self.kind}", "create_topic", params)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        params = {"TopicArn": self.arn}
        return [self.step(f"Deleting {self.kind}", "delete_topic", params)]


class Role(Resource):
    """An IAM role: its trust policy and its inline policies, exactly these."""

    kind = "IAM role"
    service = "iam"

    def __init__(
        self,
        stack: DesiredStack,
        name: str,
        *,
        trust: dict[str, Any],
        policies: dict[str, dict[str, Any]],
        description: str,
    ) -> None:
        super().__init__(stack, name)
        self.trust = trust
        self.policies = policies
        self.description = description

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.role(self.name)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        role = self.describe(remote)
        plan = []
        if role is None:
            params = {
                "RoleName": self.name,
                "AssumeRolePolicyDocument": json.dumps(self.trust),
                "Description": self.description,
                "Tags": self.stack.tags(),
            }
            plan.append(self.step(f"Creating {self.kind}", "create_role", params))
        elif canonical(role.get("AssumeRolePolicyDocument")) != canonical(self.trust):
            params = {"RoleName": self.name, "PolicyDocument": json.dumps(self.trust)}
            what = f"Updating trust policy of {self.kind}"
            plan.append(self.step(what, "update_assume_role_policy", params))
        for policy_name, policy in self.policies.items():
            current = None if role is None else remote.role_policy(self.name, policy_name)
            if current is None or canonical(current) != canonical(policy):
                verb = "Creating" if current is None else "Updating"
                params = {
                    "RoleName": self.name,
                    "PolicyName": policy_name,
                    "PolicyDocument": json.dumps(policy),
                }
                what = f"{verb} policy {policy_name} of {self.kind}"
                plan.append(self.step(what, "put_role_policy", params))
        if role is not None:
            plan += self._stale_policies(remote)
        return plan

    def _stale_policies(self, remote: RemoteState) -> list[Instruction]:
        # An inline policy of ours that is no longer wanted (a fleet that stopped reading S3).
        return [
            self.step(
                f"Deleting policy {name} of {self.kind}",
                "delete_role_policy",
                {"RoleName": self.name, "PolicyName": name},
            )
            for name in remote.role_policy_names(self.name)
            if name.startswith(_OUR_POLICY_PREFIX) and name not in self.policies
        ]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        # IAM refuses to delete a role that still has a policy, ours or one an operator added.
        plan = [
            self.step(
                f"Deleting policy {name} of {self.kind}",
                "delete_role_policy",
                {"RoleName": self.name, "PolicyName": name},
            )
            for name in remote.role_policy_names(self.name)
        ]
        plan += [
            self.step(
                f"Detaching {arn.rsplit('/', 1)[-1]} from {self.kind}",
                "detach_role_policy",
                {"RoleName": self.name, "PolicyArn": arn},
            )
            for arn in remote.attached_role_policies(self.name)
        ]
        plan.append(self.step(f"Deleting {self.kind}", "delete_role", {"RoleName": self.name}))
        return plan


class StateMachine(Resource):
    kind = "state machine"
    service = "stepfunctions"
    status_key = "status"

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.state_machine(self.stack.state_machine_arn)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        stack = self.stack
        # A role changed in this same plan may not be assumable for a few seconds.
        role_changed = any(step.service == Role.service for step in earlier)
        retry = _ROLE_PROPAGATION_CODES if role_changed else frozenset()
        described = self.describe(remote)
        if described is None or self.going(described):
            params = {
                "name": self.name,
                "definition": stack.definition,
                "roleArn": stack.role_arn,
                "type": STATE_MACHINE_TYPE,
                "tags": stack.tags(lower=True),
            }
            retry_codes = retry | {_STATE_MACHINE_DELETING}
            what = f"Creating {self.kind}"
            return [self.step(what, "create_state_machine", params, retry_codes=retry_codes)]
        if described.get("type", STATE_MACHINE_TYPE) != STATE_MACHINE_TYPE:
            raise DeployError(
                f"state machine {self.name} exists as type {described.get('type')}, not "
                f"{STATE_MACHINE_TYPE}: delete it (`rsql-cloud destroy`) and deploy again"
            )
        changes: dict[str, str] = {}
        changed = []
        if parsed(described.get("definition")) != json.loads(stack.definition):
            changes["definition"] = stack.definition
            changed.append("definition")
        if described.get("roleArn") != stack.role_arn:
            changes["roleArn"] = stack.role_arn
            changed.append("role")
        if not changes:
            return []
        params = {"stateMachineArn": stack.state_machine_arn, **changes}
        message = f"Updating {self.kind} {' and '.join(changed)}"
        return [self.step(message, "update_state_machine", params, retry_codes=retry)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        params = {"stateMachineArn": self.stack.state_machine_arn}
        return [self.step(f"Deleting {self.kind}", "delete_state_machine", params)]


def canonical(document: Any) -> Any:
    """A policy document in a form where equal policies compare equal: IAM may hand back a
    single Action or Resource as a string, and the order of list entries carries no meaning."""
    if isinstance(document, str):
        document = parsed(document)
    if isinstance(document, dict):
        return {key: _canonical_value(key, value) for key, value in document.items()}
    return document


def _canonical_value(key: str, value: Any) -> Any:
    if key in ("Action", "Resource", "NotAction", "NotResource") and isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        return canonical(value)
    if isinstance(value, list):
        items = [canonical(v) if isinstance(v, dict) else v for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return value
