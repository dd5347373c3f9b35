"""One deployed stack as the workflow commands see it: its tables, state machine and log group,
read through one set of clients, with "not deployed" said as one helpful sentence."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from agent.items import from_item, to_item
from agent.schema import Config as C
from cloud.aws import Aws, CloudError, is_error
from cloud.config import ConfigError, Workflow
from cloud.names import DEFAULT_STACK_NAME, StackNames


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
        """The config table's item as DynamoDB stores it; None when there is none."""
        with self.deployed():
            answer = self.aws.dynamodb.get_item(
                TableName=self.names.config_table,
                Key=to_item({C.WORKFLOW_ID: workflow_id}),
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

    def workflow_or_none(self, workflow_id: str) -> Workflow | None:
        """Today's config of a workflow, or None when there is none or it no longer validates."""
        item = self.config_item(workflow_id) if workflow_id else None
        if item is None:
            return None
        try:
            return Workflow.from_item(item, self.names.config_table)
        except ConfigError:
            return None

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


def lock_holder(item: dict[str, Any] | None) -> str | None:
    """The execution that holds a config item's running lock (`running_execution_id`)."""
    holder = from_item(item or {}).get(C.RUNNING_EXECUTION_ID)
    return str(holder) if holder else None


def input_workflow_id(described: dict[str, Any] | None) -> str:
    """The workflow an execution ran, from its input ("" when the input does not say)."""
    text = (described or {}).get("input")
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return ""
    return str(value.get("workflow_id") or "") if isinstance(value, dict) else ""
