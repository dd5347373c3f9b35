"""Deploy: plans checked against a fake RemoteState (no AWS), the IAM documents, then the real
thing against the emulator: deploy twice (the second plans nothing and writes nothing), a
drifted definition is updated in place, destroy and deploy again."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deploy_helpers import FakeRemote, RecordingAws

from cloud import iam
from cloud.aws import Account, Aws
from cloud.cli import main as cloud_main
from cloud.deploy import DesiredStack, deploy, plan_deploy, plan_destroy
from cloud.iam import PolicyError
from cloud.names import StackNames
from cloud.remote import AwsRemoteState
from cloud.resources import DeployError, Instruction

ACCOUNT = Account(partition="aws", region="us-east-1", account_id="123456789012")


def desired(stack_name: str = "rsql") -> DesiredStack:
    return DesiredStack(StackNames(stack_name), ACCOUNT)


def messages(plan: list[Instruction]) -> list[str]:
    return [step.message for step in plan]


# -- plans, without AWS ----------------------------------------------------------------------------


def test_a_new_stack_plans_every_resource_in_dependency_order() -> None:
    plan = plan_deploy(desired(), FakeRemote())
    assert messages(plan) == [
        "Creating DynamoDB table: rsql-config",
        "Creating DynamoDB table: rsql-job-audit",
        "Creating DynamoDB table: rsql-workflow-audit",
        "Creating Step Functions activity: rsql-jobs",
        "Creating CloudWatch log group: /rsql/jobs",
        "Setting log retention to 30 days: /rsql/jobs",
        "Creating CloudWatch log group: /rsql/metrics",
        "Setting log retention to 7 days: /rsql/metrics",
        "Creating SNS topic: rsql-notifications",
        "Creating IAM role: rsql-workflow-role",
        "Creating policy rsql-workflow-access of IAM role: rsql-workflow-role",
        "Creating state machine: rsql-workflow",
        "Creating SQS queue: rsql-schedule-dlq",
        "Creating IAM role: rsql-scheduler-role",
        "Creating policy rsql-start-workflow of IAM role: rsql-scheduler-role",
        "Creating EventBridge Scheduler group: rsql-schedules",
    ]
    tables = [step for step in plan if step.operation == "create_table"]
    assert all(t.params["BillingMode"] == "PAY_PER_REQUEST" for t in tables)
    assert all(t.waiter == "table_exists" for t in tables)
    assert tables[1].params["KeySchema"] == [
        {"AttributeName": "job_name", "KeyType": "HASH"},
        {"AttributeName": "workflow_execution_id", "KeyType": "RANGE"},
    ]
    audit = tables[2].params
    assert audit["GlobalSecondaryIndexes"][0]["KeySchema"] == [
        {"AttributeName": "workflow_id", "KeyType": "HASH"},
        {"AttributeName": "execution_start_ts", "KeyType": "RANGE"},
    ]
    (machine,) = [step for step in plan if step.operation == "create_state_machine"]
    assert machine.params["type"] == "STANDARD"
    assert machine.params["roleArn"] == "arn:aws:iam::123456789012:role/rsql-workflow-role"
    assert json.loads(machine.params["definition"]) == json.loads(desired().definition)
    # A role created in this plan may not be assumable for a few seconds: retried.
    assert "AccessDeniedException" in machine.retry_codes


def test_the_workflow_audit_table_has_an_index_of_runs_by_workflow() -> None:
    plan = plan_deploy(desired(), FakeRemote())
    creates = {
        step.params["TableName"]: step.params for step in plan if step.operation == "create_table"
    }
    assert all(
        "GlobalSecondaryIndexes" not in creates[t] for t in ("rsql-config", "rsql-job-audit")
    )
    (index,) = creates["rsql-workflow-audit"]["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_workflow_start"
    assert index["KeySchema"] == [
        {"AttributeName": "workflow_id", "KeyType": "HASH"},
        {"AttributeName": "execution_start_ts", "KeyType": "RANGE"},
    ]
    # Every attribute `history` reads; not the cause (up to 32 KB a row).
    assert index["Projection"]["ProjectionType"] == "INCLUDE"
    assert "cause" not in index["Projection"]["NonKeyAttributes"]
    assert "ProvisionedThroughput" not in index  # on-demand, like its table
    assert {d["AttributeName"] for d in creates["rsql-workflow-audit"]["AttributeDefinitions"]} == {
        "workflow_execution_id",
        "workflow_id",
        "execution_start_ts",
    }


def test_a_table_from_before_the_index_gets_it_in_place() -> None:
    stack = desired()
    remote = FakeRemote.deployed(stack)
    del remote.tables["rsql-workflow-audit"]["GlobalSecondaryIndexes"]
    (step,) = plan_deploy(stack, remote)
    assert step.message == "Creating index by_workflow_start of DynamoDB table: rsql-workflow-audit"
    assert step.operation == "update_table" and step.waiter == "table_exists"
    (update,) = step.params["GlobalSecondaryIndexUpdates"]
    assert update["Create"]["IndexName"] == "by_workflow_start"
    names = [d["AttributeName"] for d in step.params["AttributeDefinitions"]]
    assert names == ["workflow_execution_id", "workflow_id", "execution_start_ts"]


def test_an_up_to_date_stack_plans_nothing() -> None:
    stack = desired()
    assert plan_deploy(stack, FakeRemote.deployed(stack)) == []


def test_a_changed_definition_is_one_update_in_place() -> None:
    stack = desired()
    remote = FakeRemote.deployed(stack)
    old = json.loads(stack.definition)
    old["Comment"] = "an older version"
    remote.machines[stack.state_machine_arn]["definition"] = json.dumps(old)
    plan = plan_deploy(stack, remote)
    assert messages(plan) == ["Updating state machine definition: rsql-workflow"]
    assert plan[0].operation == "update_state_machine"
    assert plan[0].params == {
        "stateMachineArn": stack.state_machine_arn,
        "definition": stack.definition,
    }


def test_definitions_compare_as_json_not_as_text() -> None:
    stack = desired()
    remote = FakeRemote.deployed(stack)
    compact = json.dumps(json.loads(stack.definition), separators=(",", ":"))
    remote.machines[stack.state_machine_arn]["definition"] = compact
    assert plan_deploy(stack, remote) == []


def test_policies_compare_by_meaning() -> None:
    stack = desired()
    remote = FakeRemote.deployed(stack)
    policy = remote.role_policies[(stack.names.state_machine_role, iam.STATE_MACHINE_POLICY_NAME)]
    # IAM may answer a one-element list as a string, and in another order.
    policy["Statement"].reverse()
    for statement in policy["Statement"]:
        if len(statement["Resource"]) == 1:
            statement["Resource"] = statement["Resource"][0]
        statement["Action"].reverse()
    assert plan_deploy(stack, remote) == []
    policy["Statement"][0]["Action"] = ["dynamodb:*"]
    assert messages(plan_deploy(stack, remote)) == [
        "Updating policy rsql-workflow-access of IAM role: rsql-workflow-role"
    ]


def test_drift_in_small_things_is_fixed_one_call_each() -> None:
    stack = desired()
    remote = FakeRemote.deployed(stack)
    remote.log_groups[stack.names.log_group] = {"retentionInDays": 7}
    remote.tables[stack.names.job_audit_table]["BillingModeSummary"] = {
        "BillingMode": "PROVISIONED"
    }
    remote.machines[stack.state_machine_arn]["roleArn"] = "arn:aws:iam::123456789012:role/other"
    assert messages(plan_deploy(stack, remote)) == [
        "Updating DynamoDB table to on-demand capacity: rsql-job-audit",
        "Setting log retention to 30 days: /rsql/jobs",
        "Updating state machine role: rsql-workflow",
    ]


def test_a_table_with_other_keys_stops_the_deploy() -> None:
    stack = desired()
    remote = FakeRemote.deployed(stack)
    remote.tables[stack.names.config_table]["KeySchema"] = [
        {"AttributeName": "id", "KeyType": "HASH"}
    ]
    with pytest.raises(DeployError, match="rsql-config exists with key id \\(HASH\\)"):
        plan_deploy(stack, remote)


def test_an_express_machine_of_the_same_name_stops_the_deploy() -> None:
    stack = desired()
    remote = FakeRemote.deployed(stack)
    remote.machines[stack.state_machine_arn]["type"] = "EXPRESS"
    with pytest.raises(DeployError, match="type EXPRESS"):
        plan_deploy(stack, remote)


def test_destroy_walks_the_deploy_list_backwards_and_keeps_the_tables_unless_purged() -> None:
    stack = desired()
    remote = FakeRemote.deployed(stack)
    kept = messages(plan_destroy(stack, remote, purge=False))
    assert kept == [
        "Deleting EventBridge Scheduler group and its schedules: rsql-schedules",
        "Deleting policy rsql-start-workflow of IAM role: rsql-scheduler-role",
        "Deleting IAM role: rsql-scheduler-role",
        "Deleting SQS queue: rsql-schedule-dlq",
        "Deleting state machine: rsql-workflow",
        "Deleting policy rsql-workflow-access of IAM role: rsql-workflow-role",
        "Deleting IAM role: rsql-workflow-role",
        "Deleting SNS topic: rsql-notifications",
        "Deleting CloudWatch log group: /rsql/metrics",
        "Deleting CloudWatch log group: /rsql/jobs",
        "Deleting Step Functions activity: rsql-jobs",
    ]
    purged = messages(plan_destroy(stack, remote, purge=True))
    assert purged == [
        *kept,
        "Deleting DynamoDB table: rsql-workflow-audit",
        "Deleting DynamoDB table: rsql-job-audit",
        "Deleting DynamoDB table: rsql-config",
    ]
    # What a deploy creates, a purge deletes: the same resources, in the reverse order.
    created = [m for m in messages(plan_deploy(stack, FakeRemote())) if m.startswith("Creating")]
    assert [m.split(": ")[1] for m in created] == [m.split(": ")[1] for m in reversed(purged)]
    assert plan_destroy(stack, FakeRemote(), purge=True) == []


def test_destroy_leaves_what_is_already_going() -> None:
    stack = desired()
    remote = FakeRemote.deployed(stack)
    remote.machines[stack.state_machine_arn]["status"] = "DELETING"
    remote.tables[stack.names.config_table]["TableStatus"] = "DELETING"
    purged = messages(plan_destroy(stack, remote, purge=True))
    assert "Deleting state machine: rsql-workflow" not in purged
    assert "Deleting DynamoDB table: rsql-config" not in purged
    assert "Deleting DynamoDB table: rsql-job-audit" in purged


# -- IAM documents -------------------------------------------------------------------------------


def test_the_state_machine_policy_is_exactly_what_the_definition_uses() -> None:
    stack = desired()
    policy = stack.role_policy
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/"
    assert policy["Statement"] == [
        {
            "Sid": "ConfigTable",
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"],
            "Resource": [f"{arn}rsql-config"],
        },
        {
            "Sid": "WorkflowAuditTable",
            "Effect": "Allow",
            "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"],
            "Resource": [f"{arn}rsql-workflow-audit"],
        },
        {
            "Sid": "NotificationTopic",
            "Effect": "Allow",
            "Action": ["sns:Publish"],
            "Resource": ["arn:aws:sns:us-east-1:123456789012:rsql-notifications"],
        },
        # A wide or long stage runs in child executions of the state machine itself.
        {
            "Sid": "StartChildExecutions",
            "Effect": "Allow",
            "Action": ["states:StartExecution"],
            "Resource": ["arn:aws:states:us-east-1:123456789012:stateMachine:rsql-workflow"],
        },
        {
            "Sid": "WatchChildExecutions",
            "Effect": "Allow",
            "Action": ["states:DescribeExecution", "states:StopExecution"],
            "Resource": ["arn:aws:states:us-east-1:123456789012:execution:rsql-workflow:*"],
        },
        {
            "Sid": "WatchChildExecutionsEvents",
            "Effect": "Allow",
            "Action": ["events:DescribeRule", "events:PutRule", "events:PutTargets"],
            "Resource": [
                "arn:aws:events:us-east-1:123456789012:rule/"
                "StepFunctionsGetEventsForStepFunctionsExecutionRule"
            ],
        },
    ]
    # The one wildcard: the names of its own executions, not known in advance.
    assert json.dumps(policy).count("*") == 1


def test_the_trust_policy_names_only_step_functions() -> None:
    (statement,) = iam.trust_policy()["Statement"]
    assert statement["Principal"] == {"Service": "states.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"


@pytest.mark.parametrize(
    ("resource", "parameters", "problem"),
    [
        ("arn:aws:states:::lambda:invoke", {}, "no least-privilege rule"),
        ("arn:aws:states:::dynamodb:putItem", {"TableName": "other"}, "not one of the stack's"),
        ("arn:aws:states:::dynamodb:putItem", {"TableName.$": "$.t"}, "not one of the stack's"),
        ("arn:aws:states:::sns:publish", {"TopicArn": "arn:aws:sns:x:1:t"}, "other than"),
        (
            "arn:aws:states:::states:startExecution.sync:2",
            {"StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:other"},
            "other than itself",
        ),
    ],
)
def test_an_integration_without_a_rule_is_refused(
    resource: str, parameters: dict[str, Any], problem: str
) -> None:
    definition = json.loads(desired().definition)
    definition["States"]["Extra"] = {
        "Type": "Task",
        "Resource": resource,
        "Parameters": parameters,
        "End": True,
    }
    with pytest.raises(PolicyError, match=problem):
        iam.state_machine_policy(definition, StackNames(), ACCOUNT)


def test_the_agent_policy() -> None:
    policy = iam.agent_policy(StackNames(), ACCOUNT, "rsql/redshift")
    prefix = "arn:aws:{}:us-east-1:123456789012:"
    assert {s["Sid"]: (s["Action"], s["Resource"]) for s in policy["Statement"]} == {
        "PollJobs": (["states:GetActivityTask"], [prefix.format("states") + "activity:rsql-jobs"]),
        "ReportJobs": (
            ["states:SendTaskFailure", "states:SendTaskHeartbeat", "states:SendTaskSuccess"],
            ["*"],
        ),
        "JobAudit": (
            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            [prefix.format("dynamodb") + "table/rsql-job-audit"],
        ),
        "JobLogs": (
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [prefix.format("logs") + "log-group:/rsql/jobs:*"],
        ),
        "AgentMetrics": (
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [prefix.format("logs") + "log-group:/rsql/metrics:*"],
        ),
        "RedshiftSecret": (
            ["secretsmanager:GetSecretValue"],
            [prefix.format("secretsmanager") + "secret:rsql/redshift-??????"],
        ),
        "ScaleInLifecycle": (
            ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
            [prefix.format("autoscaling") + "autoScalingGroup:*:autoScalingGroupName/rsql-agents"],
        ),
        "InstanceTags": (["ec2:DescribeTags"], ["*"]),
    }


# -- against the emulator --------------------------------------------------------------------------


@pytest.fixture
def names(uid: str, emulator: Any) -> StackNames:
    return StackNames(f"dep{uid}")


def test_deploy_creates_the_stack_and_a_second_deploy_writes_nothing(
    names: StackNames, aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    first = RecordingAws()
    plan, outputs = deploy(first, names, say=lambda m: None)
    assert len(plan) == 16 and first.writes

    machine = aws.sfn.describe_state_machine(stateMachineArn=outputs.state_machine_arn)
    stack = DesiredStack(names, ACCOUNT)
    assert json.loads(machine["definition"]) == json.loads(stack.definition)
    assert machine["roleArn"] == outputs.role_arn and machine["type"] == "STANDARD"
    policy = aws.iam.get_role_policy(
        RoleName=names.state_machine_role, PolicyName=iam.STATE_MACHINE_POLICY_NAME
    )["PolicyDocument"]
    assert policy == stack.role_policy
    table = aws.ddb.describe_table(TableName=names.workflow_audit_table)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [k["AttributeName"] for k in table["KeySchema"]] == [
        "workflow_execution_id",
        "workflow_id",
    ]
    (group,) = aws.logs.describe_log_groups(logGroupNamePrefix=names.log_group)["logGroups"]
    assert group["retentionInDays"] == 30
    (metrics,) = aws.logs.describe_log_groups(logGroupNamePrefix=names.metrics_log_group)[
        "logGroups"
    ]
    assert metrics["retentionInDays"] == 7
    aws.sfn.describe_activity(activityArn=outputs.activity_arn)
    aws.sns.get_topic_attributes(TopicArn=outputs.topic_arn)

    second = RecordingAws()
    plan, again = deploy(second, names, say=lambda m: None)
    assert plan == [] and second.writes == [] and again == outputs

    assert cloud_main(["deploy", "--stack-name", names.stack_name]) == 0
    out = capsys.readouterr().out
    assert f"No changes: stack {names.stack_name} is up to date." in out
    assert "Creating" not in out and "Updating" not in out


def test_a_drifted_definition_is_updated_in_place(names: StackNames, aws: Any) -> None:
    _, outputs = deploy(Aws(), names, say=lambda m: None)
    drifted = json.loads(
        aws.sfn.describe_state_machine(stateMachineArn=outputs.state_machine_arn)["definition"]
    )
    drifted["Comment"] = "edited in the console"
    aws.sfn.update_state_machine(
        stateMachineArn=outputs.state_machine_arn, definition=json.dumps(drifted)
    )

    said: list[str] = []
    recorder = RecordingAws()
    plan, _ = deploy(recorder, names, say=said.append)
    assert said == [f"Updating state machine definition: {names.state_machine}"]
    assert messages(plan) == said
    assert recorder.writes == ["UpdateStateMachine"]
    current = aws.sfn.describe_state_machine(stateMachineArn=outputs.state_machine_arn)
    assert json.loads(current["definition"])["Comment"] != "edited in the console"
    assert plan_deploy(DesiredStack(names, ACCOUNT), AwsRemoteState(Aws())) == []


def test_dry_run_prints_the_plan_and_changes_nothing(
    names: StackNames, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cloud_main(["deploy", "--stack-name", names.stack_name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"  Creating DynamoDB table: {names.config_table}" in out
    assert f"  Creating state machine: {names.state_machine}" in out
    assert len(plan_deploy(DesiredStack(names, ACCOUNT), AwsRemoteState(Aws()))) == 16


def test_deploy_json_prints_names_and_arns(
    names: StackNames, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cloud_main(["deploy", "--stack-name", names.stack_name, "--json"]) == 0
    captured = capsys.readouterr()
    outputs = json.loads(captured.out)
    assert outputs == {
        "stack_name": names.stack_name,
        "config_table": names.config_table,
        "job_audit_table": names.job_audit_table,
        "workflow_audit_table": names.workflow_audit_table,
        "activity_arn": f"arn:aws:states:us-east-1:123456789012:activity:{names.activity}",
        "state_machine_arn": (
            f"arn:aws:states:us-east-1:123456789012:stateMachine:{names.state_machine}"
        ),
        "log_group": names.log_group,
        "metrics_log_group": names.metrics_log_group,
        "topic_arn": f"arn:aws:sns:us-east-1:123456789012:{names.topic}",
        "role_arn": f"arn:aws:iam::123456789012:role/{names.state_machine_role}",
    }
    assert f"Creating DynamoDB table: {names.config_table}" in captured.err


def test_destroy_then_deploy_again(
    names: StackNames, aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = ["--stack-name", names.stack_name]
    assert cloud_main(["deploy", *stack]) == 0
    aws.ddb.put_item(TableName=names.config_table, Item={"workflow_id": {"S": "kept"}})

    # Not on a terminal (pytest's stdin), destroy wants --yes and deletes nothing without it.
    capsys.readouterr()
    assert cloud_main(["destroy", *stack]) == 1
    assert "without --yes" in capsys.readouterr().err
    assert plan_deploy(DesiredStack(names, ACCOUNT), AwsRemoteState(Aws())) == []

    assert cloud_main(["destroy", *stack, "--yes"]) == 0
    assert "tables are kept" in capsys.readouterr().out
    remote = AwsRemoteState(Aws())
    desired_stack = DesiredStack(names, ACCOUNT)
    assert remote.state_machine(desired_stack.state_machine_arn) is None
    assert remote.activity(desired_stack.activity_arn) is None
    assert remote.role(names.state_machine_role) is None
    assert remote.log_group(names.log_group) is None
    assert remote.log_group(names.metrics_log_group) is None
    assert remote.topic(desired_stack.topic_arn) is None
    item = aws.ddb.get_item(TableName=names.config_table, Key={"workflow_id": {"S": "kept"}})
    assert "Item" in item

    assert cloud_main(["deploy", *stack]) == 0
    out = capsys.readouterr().out
    assert "Creating DynamoDB table" not in out and "Creating state machine" in out
    assert plan_deploy(desired_stack, AwsRemoteState(Aws())) == []

    assert cloud_main(["destroy", *stack, "--purge", "--yes"]) == 0
    assert AwsRemoteState(Aws()).table(names.config_table) is None
    assert cloud_main(["destroy", *stack, "--yes"]) == 0
    assert "Nothing to delete" in capsys.readouterr().out


def test_agent_policy_command_prints_json(
    names: StackNames, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["iam", "agent-policy", "--stack-name", names.stack_name, "--secret-id", "s/x"]
    assert cloud_main(args) == 0
    policy = json.loads(capsys.readouterr().out)
    assert policy == iam.agent_policy(names, ACCOUNT, "s/x")
