"""What exists of a stack in AWS: `RemoteState` answers "does this resource exist, and with
what values", each question asked of AWS at most once per run. The planner reads it; tests
answer it from dicts, without AWS."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from botocore.exceptions import ClientError

from cloud.aws import Aws, is_error


class RemoteState(Protocol):
    """What exists in AWS; None for "not there"."""

    def table(self, name: str) -> dict[str, Any] | None: ...
    def activity(self, arn: str) -> dict[str, Any] | None: ...
    def log_group(self, name: str) -> dict[str, Any] | None: ...
    def topic(self, arn: str) -> dict[str, Any] | None: ...
    def role(self, name: str) -> dict[str, Any] | None: ...
    def role_policy(self, role: str, policy: str) -> dict[str, Any] | None: ...
    def role_policy_names(self, role: str) -> list[str]: ...
    def attached_role_policies(self, role: str) -> list[str]: ...
    def state_machine(self, arn: str) -> dict[str, Any] | None: ...
    def queue(self, name: str) -> dict[str, Any] | None: ...
    def schedule_group(self, name: str) -> dict[str, Any] | None: ...
    def subscriptions(self, topic_arn: str) -> list[dict[str, Any]]: ...
    def alarm(self, name: str) -> dict[str, Any] | None: ...
    def dashboard(self, name: str) -> dict[str, Any] | None: ...
    def instance_profile(self, name: str) -> dict[str, Any] | None: ...
    def launch_template(self, name: str) -> dict[str, Any] | None: ...
    def autoscaling_group(self, name: str) -> dict[str, Any] | None: ...
    def lifecycle_hook(self, group: str, name: str) -> dict[str, Any] | None: ...
    def scaling_policy(self, group: str, name: str) -> dict[str, Any] | None: ...


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
            raise _missing("DescribeLogGroups")

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
            document: Any = parsed(answer["PolicyDocument"])
            return dict(document) if isinstance(document, dict) else {}

        return self._ask(("role_policy", role, policy), describe, "NoSuchEntity")

    def role_policy_names(self, role: str) -> list[str]:
        def describe() -> dict[str, Any]:
            pages = self._aws.iam.get_paginator("list_role_policies").paginate(RoleName=role)
            return {"names": [name for page in pages for name in page["PolicyNames"]]}

        answer = self._ask(("role_policy_names", role), describe, "NoSuchEntity")
        return list(answer["names"]) if answer else []

    def attached_role_policies(self, role: str) -> list[str]:
        def describe() -> dict[str, Any]:
            pages = self._aws.iam.get_paginator("list_attached_role_policies")
            arns = [
                policy["PolicyArn"]
                for page in pages.paginate(RoleName=role)
                for policy in page["AttachedPolicies"]
            ]
            return {"arns": arns}

        answer = self._ask(("attached_role_policies", role), describe, "NoSuchEntity")
        return list(answer["arns"]) if answer else []

    def state_machine(self, arn: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            return dict(self._aws.sfn.describe_state_machine(stateMachineArn=arn))

        return self._ask(("state_machine", arn), describe, "StateMachineDoesNotExist")

    def queue(self, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            sqs = self._aws.client("sqs")
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
            return {"QueueUrl": url, **attributes.get("Attributes", {})}

        missing = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
        return self._ask(("queue", name), describe, *missing)

    def schedule_group(self, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            return dict(self._aws.client("scheduler").get_schedule_group(Name=name))

        return self._ask(("schedule_group", name), describe, "ResourceNotFoundException")

    def subscriptions(self, topic_arn: str) -> list[dict[str, Any]]:
        def describe() -> dict[str, Any]:
            pages = self._aws.sns.get_paginator("list_subscriptions_by_topic")
            subscriptions = [
                dict(subscription)
                for page in pages.paginate(TopicArn=topic_arn)
                for subscription in page["Subscriptions"]
            ]
            return {"subscriptions": subscriptions}

        answer = self._ask(("subscriptions", topic_arn), describe, "NotFound")
        return list(answer["subscriptions"]) if answer else []

    def alarm(self, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            answer = self._aws.client("cloudwatch").describe_alarms(AlarmNames=[name])
            for alarm in answer.get("MetricAlarms", []):
                if alarm.get("AlarmName") == name:
                    return dict(alarm)
            raise _missing("DescribeAlarms")

        return self._ask(("alarm", name), describe, _NOT_FOUND)

    def dashboard(self, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            return dict(self._aws.client("cloudwatch").get_dashboard(DashboardName=name))

        return self._ask(("dashboard", name), describe, "ResourceNotFound")

    def instance_profile(self, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            answer = self._aws.iam.get_instance_profile(InstanceProfileName=name)
            return dict(answer["InstanceProfile"])

        return self._ask(("instance_profile", name), describe, "NoSuchEntity")

    def launch_template(self, name: str) -> dict[str, Any] | None:
        """The template with its latest version's data under `LaunchTemplateData`."""

        def describe() -> dict[str, Any]:
            ec2 = self._aws.client("ec2")
            versions = ec2.describe_launch_template_versions(
                LaunchTemplateName=name, Versions=["$Latest"]
            )["LaunchTemplateVersions"]
            if not versions:
                raise _missing("DescribeLaunchTemplateVersions")
            return dict(versions[0])

        missing = ("InvalidLaunchTemplateName.NotFoundException", _NOT_FOUND)
        return self._ask(("launch_template", name), describe, *missing)

    def autoscaling_group(self, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            answer = self._aws.client("autoscaling").describe_auto_scaling_groups(
                AutoScalingGroupNames=[name]
            )
            for group in answer.get("AutoScalingGroups", []):
                if group.get("AutoScalingGroupName") == name:
                    return dict(group)
            raise _missing("DescribeAutoScalingGroups")

        return self._ask(("autoscaling_group", name), describe, _NOT_FOUND)

    def lifecycle_hook(self, group: str, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            answer = self._aws.client("autoscaling").describe_lifecycle_hooks(
                AutoScalingGroupName=group, LifecycleHookNames=[name]
            )
            for hook in answer.get("LifecycleHooks", []):
                if hook.get("LifecycleHookName") == name:
                    return dict(hook)
            raise _missing("DescribeLifecycleHooks")

        # A group that does not exist answers ValidationError.
        return self._ask(("lifecycle_hook", group, name), describe, _NOT_FOUND, "ValidationError")

    def scaling_policy(self, group: str, name: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            answer = self._aws.client("autoscaling").describe_policies(
                AutoScalingGroupName=group, PolicyNames=[name]
            )
            for policy in answer.get("ScalingPolicies", []):
                if policy.get("PolicyName") == name:
                    return dict(policy)
            raise _missing("DescribePolicies")

        return self._ask(("scaling_policy", group, name), describe, _NOT_FOUND, "ValidationError")


# What a Describe call that answers "nothing of that name" is turned into.
_NOT_FOUND = "NotFound"


def _missing(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": _NOT_FOUND}}, operation)


def parsed(document: Any) -> Any:
    """A JSON document AWS may answer as text or as already decoded; None if it is not JSON."""
    try:
        return json.loads(document) if isinstance(document, str) else document
    except json.JSONDecodeError:
        return None
