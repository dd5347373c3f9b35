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
            document: Any = parsed(answer["PolicyDocument"])
            return dict(document) if isinstance(document, dict) else {}

        return self._ask(("role_policy", role, policy), describe, "NoSuchEntity")

    def state_machine(self, arn: str) -> dict[str, Any] | None:
        def describe() -> dict[str, Any]:
            return dict(self._aws.sfn.describe_state_machine(stateMachineArn=arn))

        return self._ask(("state_machine", arn), describe, "StateMachineDoesNotExist")


def parsed(document: Any) -> Any:
    """A JSON document AWS may answer as text or as already decoded; None if it is not JSON."""
    try:
        return json.loads(document) if isinstance(document, str) else document
    except json.JSONDecodeError:
        return None
