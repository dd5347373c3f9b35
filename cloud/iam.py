"""IAM for the stack: the state machine's role, and the policy the agent hosts need.

The state machine's inline policy is derived from the rendered definition itself: every
DynamoDB and SNS service integration in it contributes exactly its action on exactly its
resource, a `states:startExecution` of the state machine itself (a wide or long stage runs in
child executions) contributes StartExecution on it and, for `.sync`, what AWS documents the
wait needs (DescribeExecution and StopExecution of its executions, its EventBridge rule), and a
resource no rule here knows is an error rather than a silently missing (or silently broad)
permission. Activity tasks need no IAM on the state machine's side.

The agent's host policy is built for operators to attach to the hosts' instance role
(`rsql-cloud iam agent-policy`); deploy does not create that role, the hosts' owners do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from cloud.aws import Account, CloudError
from cloud.names import StackNames

POLICY_VERSION: Final = "2012-10-17"
STATE_MACHINE_POLICY_NAME: Final = "rsql-workflow-access"
SCHEDULER_POLICY_NAME: Final = "rsql-start-workflow"
AGENT_POLICY_NAME: Final = "rsql-agent"
AGENT_BOOTSTRAP_POLICY_NAME: Final = "rsql-agent-bootstrap"
STATES_PRINCIPAL: Final = "states.amazonaws.com"
SCHEDULER_PRINCIPAL: Final = "scheduler.amazonaws.com"
EC2_PRINCIPAL: Final = "ec2.amazonaws.com"
_DYNAMODB_TASK_RE: Final = re.compile(
    r"^arn:[a-z-]+:states:::dynamodb:(getItem|putItem|updateItem|deleteItem)$"
)
_SNS_PUBLISH_RE: Final = re.compile(r"^arn:[a-z-]+:states:::sns:publish$")
_ACTIVITY_RE: Final = re.compile(r"^arn:[a-z-]+:states:[^:]*:\d*:activity:.+$")
_START_EXECUTION_RE: Final = re.compile(
    r"^arn:[a-z-]+:states:::states:startExecution(\.sync(?::2)?)?$"
)
# The state machine's own ARN, from the context object: how it starts itself.
_ITSELF: Final = "$$.StateMachine.Id"
# The managed rule through which Step Functions learns that a `.sync` child has ended.
SYNC_EVENTS_RULE: Final = "rule/StepFunctionsGetEventsForStepFunctionsExecutionRule"


class PolicyError(CloudError):
    """The definition uses a resource the least-privilege rules here do not cover."""


def trust_policy(
    principal: str = STATES_PRINCIPAL, account: Account | None = None
) -> dict[str, Any]:
    """Only `principal` (Step Functions unless said) may assume the role; with `account`, only
    on behalf of that account (the confused-deputy guard AWS recommends for Scheduler)."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": principal},
        "Action": "sts:AssumeRole",
    }
    if account is not None:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": account.account_id}}
    return {"Version": POLICY_VERSION, "Statement": [statement]}


def table_arn(account: Account, table: str) -> str:
    return account.arn("dynamodb", f"table/{table}")


def topic_arn(account: Account, names: StackNames) -> str:
    return account.arn("sns", names.topic)


def activity_arn(account: Account, names: StackNames) -> str:
    return account.arn("states", f"activity:{names.activity}")


def log_group_arn(account: Account, names: StackNames) -> str:
    return account.arn("logs", f"log-group:{names.log_group}")


def metrics_log_group_arn(account: Account, names: StackNames) -> str:
    return account.arn("logs", f"log-group:{names.metrics_log_group}")


def autoscaling_group_arn(account: Account, names: StackNames) -> str:
    # The group's id in its ARN is generated; the name part is what a policy can rely on.
    return account.arn(
        "autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{names.autoscaling_group}"
    )


def state_machine_arn(account: Account, names: StackNames) -> str:
    return account.arn("states", f"stateMachine:{names.state_machine}")


def queue_arn(account: Account, queue: str) -> str:
    return account.arn("sqs", queue)


def scheduler_policy(names: StackNames, account: Account) -> dict[str, Any]:
    """What EventBridge Scheduler needs to start the workflow: StartExecution on the one state
    machine, and SendMessage on the dead-letter queue for the starts it gave up on."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            _allow(
                "StartWorkflow",
                {"states:StartExecution"},
                [state_machine_arn(account, names)],
            ),
            _allow(
                "DeadLetters",
                {"sqs:SendMessage"},
                [queue_arn(account, names.schedule_dlq)],
            ),
        ],
    }


def bootstrap_policy(s3_sources: list[str], account: Account) -> dict[str, Any] | None:
    """Reads a fleet host makes once, at boot: the agent's wheel and the scripts, where they come
    from S3 (`s3://bucket/key` or `s3://bucket/prefix/`); None when nothing comes from S3."""
    objects: set[str] = set()
    buckets: dict[str, set[str]] = {}
    for source in s3_sources:
        bucket, _, key = source.removeprefix("s3://").partition("/")
        arn = f"arn:{account.partition}:s3:::{bucket}"
        if not key or key.endswith("/"):
            objects.add(f"{arn}/{key}*")
            buckets.setdefault(arn, set()).add(f"{key}*")
        else:
            objects.add(f"{arn}/{key}")
    if not objects:
        return None
    statements = [_allow("ReadAtBoot", {"s3:GetObject"}, sorted(objects))]
    for number, (arn, prefixes) in enumerate(sorted(buckets.items()), start=1):
        statement = _allow(f"ListAtBoot{number}", {"s3:ListBucket"}, [arn])
        statement["Condition"] = {"StringLike": {"s3:prefix": sorted(prefixes)}}
        statements.append(statement)
    return {"Version": POLICY_VERSION, "Statement": statements}


def secret_arn_pattern(account: Account, secret_id: str) -> str:
    # Secrets Manager appends '-' and 6 random characters to a secret's name in its ARN.
    if secret_id.startswith("arn:"):
        return secret_id
    return account.arn("secretsmanager", f"secret:{secret_id}-??????")


def state_machine_policy(
    definition: dict[str, Any], names: StackNames, account: Account
) -> dict[str, Any]:
    """What the definition's service integrations need, on the stack's own resources only."""
    tables = {
        names.config_table: "ConfigTable",
        names.job_audit_table: "JobAuditTable",
        names.workflow_audit_table: "WorkflowAuditTable",
    }
    topic = topic_arn(account, names)
    actions: dict[str, set[str]] = {}
    children = {"start": False, "sync": False}
    for where, state in _task_states(definition, ""):
        resource = str(state.get("Resource", ""))
        parameters = state.get("Parameters") or {}
        if match := _DYNAMODB_TASK_RE.match(resource):
            table = parameters.get("TableName")
            if table not in tables:
                raise PolicyError(
                    f"state {where}: DynamoDB table {table!r} is not one of the stack's tables "
                    "(a fixed TableName is required for a least-privilege policy)"
                )
            operation = match.group(1)
            actions.setdefault(table, set()).add(f"dynamodb:{operation[0].upper()}{operation[1:]}")
        elif _SNS_PUBLISH_RE.match(resource):
            if parameters.get("TopicArn") != topic:
                raise PolicyError(f"state {where}: publishes to a topic other than {topic}")
            actions.setdefault(topic, set()).add("sns:Publish")
        elif match := _START_EXECUTION_RE.match(resource):
            if parameters.get("StateMachineArn.$") != _ITSELF:
                raise PolicyError(
                    f"state {where}: starts a state machine other than itself "
                    f"(StateMachineArn.$ must be {_ITSELF})"
                )
            children["start"] = True
            children["sync"] |= bool(match.group(1))
        elif not _ACTIVITY_RE.match(resource):
            raise PolicyError(
                f"state {where}: no least-privilege rule for resource {resource!r} in cloud/iam.py"
            )
    statements = []
    for table, sid in tables.items():
        if table in actions:
            statements.append(_allow(sid, actions[table], [table_arn(account, table)]))
    if topic in actions:
        statements.append(_allow("NotificationTopic", actions[topic], [topic]))
    statements += _child_statements(account, names, **children)
    return {"Version": POLICY_VERSION, "Statement": statements}


def _child_statements(account: Account, names: StackNames, start: bool, sync: bool) -> list[Any]:
    """Starting its own child executions; waiting for them (`.sync`) as AWS documents it."""
    if not start:
        return []
    statements = [
        _allow(
            "StartChildExecutions", {"states:StartExecution"}, [state_machine_arn(account, names)]
        )
    ]
    if sync:
        # Execution names are not known in advance: every execution of this state machine.
        executions = account.arn("states", f"execution:{names.state_machine}:*")
        statements.append(
            _allow(
                "WatchChildExecutions",
                {"states:DescribeExecution", "states:StopExecution"},
                [executions],
            )
        )
        statements.append(
            _allow(
                "WatchChildExecutionsEvents",
                {"events:PutTargets", "events:PutRule", "events:DescribeRule"},
                [account.arn("events", SYNC_EVENTS_RULE)],
            )
        )
    return statements


def agent_policy(names: StackNames, account: Account, secret_id: str) -> dict[str, Any]:
    """The instance role policy of the hosts that run `rsql-agent`."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            _allow("PollJobs", {"states:GetActivityTask"}, [activity_arn(account, names)]),
            # Task tokens are not resources IAM can name: AWS requires "*" for these three.
            _allow(
                "ReportJobs",
                {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"},
                ["*"],
            ),
            _allow(
                "JobAudit",
                {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
                [table_arn(account, names.job_audit_table)],
            ),
            _allow(
                "JobLogs",
                {"logs:CreateLogStream", "logs:PutLogEvents"},
                [f"{log_group_arn(account, names)}:*"],
            ),
            # Embedded metric format lines, one stream per host (agent/metrics.py); CloudWatch
            # extracts the metrics, so no cloudwatch:PutMetricData.
            _allow(
                "AgentMetrics",
                {"logs:CreateLogStream", "logs:PutLogEvents"},
                [f"{metrics_log_group_arn(account, names)}:*"],
            ),
            _allow(
                "RedshiftSecret",
                {"secretsmanager:GetSecretValue"},
                [secret_arn_pattern(account, secret_id)],
            ),
            # A host being scaled in keeps the group's termination hook waiting while its jobs
            # finish, then lets it go on (agent/lifecycle.py).
            _allow(
                "ScaleInLifecycle",
                {
                    "autoscaling:RecordLifecycleActionHeartbeat",
                    "autoscaling:CompleteLifecycleAction",
                },
                [autoscaling_group_arn(account, names)],
            ),
            # The group and hook names from the instance's own tags, where instance metadata
            # does not expose them; DescribeTags has no resource-level permissions.
            _allow("InstanceTags", {"ec2:DescribeTags"}, ["*"]),
        ],
    }


def _allow(sid: str, actions: set[str], resources: list[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}


def _task_states(graph: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Task state, in nested Map processors and Parallel branches too."""
    for name, state in (graph.get("States") or {}).items():
        where = f"{prefix}{name}"
        if state.get("Type") == "Task":
            yield where, state
        for processor_key in ("ItemProcessor", "Iterator"):
            if processor := state.get(processor_key):
                yield from _task_states(processor, f"{where}.")
        for index, branch in enumerate(state.get("Branches") or []):
            yield from _task_states(branch, f"{where}[{index}].")
