"""Helpers of the deploy tests: `FakeRemote`, a `cloud.remote.RemoteState` answered from dicts,
so plans are checked without AWS (`FakeRemote.deployed(stack)` is what a finished `rsql-cloud
deploy` leaves); `RecordingAws`, an `Aws` that records every call it makes."""

from __future__ import annotations

import copy
from typing import Any

import boto3

from cloud import iam
from cloud.aws import Aws
from cloud.deploy import DesiredStack
from cloud.resources_scheduling import DLQ_RETENTION_S


class FakeRemote:
    """Every RemoteState question answered from the dicts below (None / [] when absent)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}
        self.activities: set[str] = set()
        self.log_groups: dict[str, dict[str, Any]] = {}
        self.topics: set[str] = set()
        self.roles: dict[str, dict[str, Any]] = {}
        self.role_policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.attached: dict[str, list[str]] = {}
        self.machines: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.schedule_groups: dict[str, dict[str, Any]] = {}
        self.topic_subscriptions: dict[str, list[dict[str, Any]]] = {}
        self.alarms: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.instance_profiles: dict[str, dict[str, Any]] = {}
        self.launch_templates: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.hooks: dict[tuple[str, str], dict[str, Any]] = {}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}

    @classmethod
    def deployed(cls, stack: DesiredStack) -> FakeRemote:
        remote = cls()
        names = stack.names
        for name, keys in (
            (names.config_table, [("workflow_id", "HASH")]),
            (names.job_audit_table, [("job_name", "HASH"), ("workflow_execution_id", "RANGE")]),
            (
                names.workflow_audit_table,
                [("workflow_execution_id", "HASH"), ("workflow_id", "RANGE")],
            ),
        ):
            remote.tables[name] = {
                "TableStatus": "ACTIVE",
                "KeySchema": [{"AttributeName": a, "KeyType": k} for a, k in keys],
                "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
            }
        remote.tables[names.workflow_audit_table]["GlobalSecondaryIndexes"] = [
            {"IndexName": "by_workflow_start", "IndexStatus": "ACTIVE"}
        ]
        remote.activities.add(stack.activity_arn)
        remote.log_groups[names.log_group] = {"retentionInDays": 30}
        remote.log_groups[names.metrics_log_group] = {"retentionInDays": 7}
        remote.topics.add(stack.topic_arn)
        remote.roles[names.state_machine_role] = {"AssumeRolePolicyDocument": iam.trust_policy()}
        key = (names.state_machine_role, iam.STATE_MACHINE_POLICY_NAME)
        remote.role_policies[key] = copy.deepcopy(stack.role_policy)
        remote.machines[stack.state_machine_arn] = {
            "status": "ACTIVE",
            "type": "STANDARD",
            "definition": stack.definition,
            "roleArn": stack.role_arn,
        }
        remote.queues[names.schedule_dlq] = {
            "QueueUrl": f"https://sqs.example/{names.schedule_dlq}",
            "MessageRetentionPeriod": str(DLQ_RETENTION_S),
            "SqsManagedSseEnabled": "true",
        }
        trust = iam.trust_policy(iam.SCHEDULER_PRINCIPAL, stack.account)
        remote.roles[names.scheduler_role] = {"AssumeRolePolicyDocument": trust}
        key = (names.scheduler_role, iam.SCHEDULER_POLICY_NAME)
        remote.role_policies[key] = copy.deepcopy(stack.scheduler_policy)
        remote.schedule_groups[names.schedule_group] = {"State": "ACTIVE"}
        return remote

    def table(self, name: str) -> dict[str, Any] | None:
        return self.tables.get(name)

    def activity(self, arn: str) -> dict[str, Any] | None:
        return {"activityArn": arn} if arn in self.activities else None

    def log_group(self, name: str) -> dict[str, Any] | None:
        return self.log_groups.get(name)

    def topic(self, arn: str) -> dict[str, Any] | None:
        return {"TopicArn": arn} if arn in self.topics else None

    def role(self, name: str) -> dict[str, Any] | None:
        return self.roles.get(name)

    def role_policy(self, role: str, policy: str) -> dict[str, Any] | None:
        return self.role_policies.get((role, policy))

    def role_policy_names(self, role: str) -> list[str]:
        return [policy for (owner, policy) in self.role_policies if owner == role]

    def attached_role_policies(self, role: str) -> list[str]:
        return list(self.attached.get(role, []))

    def state_machine(self, arn: str) -> dict[str, Any] | None:
        return self.machines.get(arn)

    def queue(self, name: str) -> dict[str, Any] | None:
        return self.queues.get(name)

    def schedule_group(self, name: str) -> dict[str, Any] | None:
        return self.schedule_groups.get(name)

    def subscriptions(self, topic_arn: str) -> list[dict[str, Any]]:
        return list(self.topic_subscriptions.get(topic_arn, []))

    def alarm(self, name: str) -> dict[str, Any] | None:
        return self.alarms.get(name)

    def dashboard(self, name: str) -> dict[str, Any] | None:
        return self.dashboards.get(name)

    def instance_profile(self, name: str) -> dict[str, Any] | None:
        return self.instance_profiles.get(name)

    def launch_template(self, name: str) -> dict[str, Any] | None:
        return self.launch_templates.get(name)

    def autoscaling_group(self, name: str) -> dict[str, Any] | None:
        return self.groups.get(name)

    def lifecycle_hook(self, group: str, name: str) -> dict[str, Any] | None:
        return self.hooks.get((group, name))

    def scaling_policy(self, group: str, name: str) -> dict[str, Any] | None:
        return self.policies.get((group, name))


class RecordingAws(Aws):
    """Aws whose every API call is recorded by operation name."""

    def __init__(self) -> None:
        session = boto3.session.Session()
        self.calls: list[str] = []
        session.events.register("before-call", self._record)
        super().__init__(session)

    def _record(self, model: Any, **kwargs: Any) -> None:
        self.calls.append(model.name)

    @property
    def writes(self) -> list[str]:
        return [c for c in self.calls if not c.startswith(("Describe", "Get", "List"))]
