"""`rsql-cloud fleet`: input checked against the account before anything changes, the
resources created with the right settings on the emulator (moto's EC2, Auto Scaling, IAM and
CloudWatch), a second run that changes nothing, updates in place, the user data, and destroy."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from deploy_helpers import RecordingAws

from cloud import iam, scaling, userdata
from cloud.aws import Account
from cloud.cli import main as cloud_main
from cloud.names import StackNames

ACCOUNT = Account(partition="aws", region="us-east-1", account_id="123456789012")
WHEEL = "s3://etl-dist/agent/rsql_agent-0.1.0-py3-none-any.whl"
SCRIPTS = "s3://etl-dist/scripts/"


@pytest.fixture(scope="module")
def names(emulator: Any) -> Iterator[StackNames]:
    stack = StackNames(f"flt{uuid.uuid4().hex[:8]}")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cloud_main(["deploy", "--stack-name", stack.stack_name]) == 0
    yield stack


@pytest.fixture(scope="module")
def subnets(emulator: Any) -> list[str]:
    ec2 = boto3.client("ec2", endpoint_url=emulator.endpoint_url)
    found = ec2.describe_subnets()["Subnets"]
    return [s["SubnetId"] for s in sorted(found, key=lambda s: s["AvailabilityZone"])][:2]


def fleet_args(names: StackNames, subnets: list[str], *extra: str) -> list[str]:
    return [
        "fleet",
        "deploy",
        "--stack-name",
        names.stack_name,
        "--subnets",
        ",".join(subnets),
        "--instance-types",
        "m5.large,m5a.large",
        "--agent-source",
        WHEEL,
        "--scripts",
        SCRIPTS,
        *extra,
    ]


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cloud_main(argv)
    return code, out.getvalue(), err.getvalue()


def deploy_recorded(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str, list[str]]:
    recorder = RecordingAws()
    monkeypatch.setattr("cloud.commands_fleet._aws", lambda: recorder)
    code, out, err = run(argv)
    return code, out, err, recorder.writes


# -- bad input: one line, nothing changed --------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ["--subnets", "subnet-0123456789abcdef0"],
            "--subnets: The subnet ID 'subnet-0123456789abcdef0' does not exist "
            "(InvalidSubnetID.NotFound)",
        ),
        (
            ["--instance-types", "m5.large,t3.nope"],
            "--instance-types: The following supplied instance types do not exist: [t3.nope] "
            "(InvalidInstanceType)",
        ),
        (
            ["--instance-types", "m5.large,m7g.large"],
            "--instance-types: the types must share one CPU architecture",
        ),
        (["--instance-types", "m5 large"], "--instance-types: not an instance type: 'm5 large'"),
        (["--min", "3", "--max", "2"], "--min/--max: need 0 <= min <= max and max >= 1, got 3/2"),
        (["--scripts", "scripts/"], "--scripts: an s3://bucket/prefix/ or an absolute path"),
        (["--image-id", "ami-00000000000000000"], "--image-id:"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    names: StackNames,
    subnets: list[str],
    change: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = fleet_args(names, subnets)
    for option, value in zip(change[::2], change[1::2], strict=True):
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    code, out, err, writes = deploy_recorded(argv, monkeypatch)
    assert code == 1, out
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"rsql-cloud: {message}"), err
    assert writes == []


def test_a_stack_not_deployed_is_refused(subnets: list[str], emulator: Any) -> None:
    code, _, err = run(fleet_args(StackNames(f"none{uuid.uuid4().hex[:6]}"), subnets))
    assert code == 1
    assert "is not deployed" in err and "rsql-cloud deploy --stack-name" in err


# -- on the emulator -------------------------------------------------------------------------------


def test_deploy_creates_the_fleet_and_a_second_run_changes_nothing(
    names: StackNames, subnets: list[str], aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = fleet_args(names, subnets, "--max", "6", "--spot", "--concurrency", "4")
    code, out, _, writes = deploy_recorded([*argv, "--dry-run"], monkeypatch)
    assert code == 0 and writes == []
    planned = [line.strip() for line in out.splitlines()[1:]]
    assert planned == [
        f"Creating IAM role: {names.agent_role}",
        f"Creating policy rsql-agent of IAM role: {names.agent_role}",
        f"Creating policy rsql-agent-bootstrap of IAM role: {names.agent_role}",
        f"Creating IAM instance profile: {names.agent_role}",
        f"Adding role {names.agent_role} to IAM instance profile: {names.agent_role}",
        f"Creating EC2 launch template: {names.launch_template}",
        f"Creating Auto Scaling group: {names.autoscaling_group}",
        f"Collecting group metrics of: {names.autoscaling_group}",
        f"Creating termination lifecycle hook: {names.lifecycle_hook}",
        f"Creating scaling policy: {names.scaling_policy('out')}",
        f"Creating CloudWatch alarm: {names.scaling_policy('out')}",
        f"Creating scaling policy: {names.scaling_policy('in')}",
        f"Creating CloudWatch alarm: {names.scaling_policy('in')}",
    ]

    code, out, err, writes = deploy_recorded(argv, monkeypatch)
    assert code == 0, err
    assert len(writes) == len(planned)
    _check_fleet(aws, names, subnets)

    code, out, err, writes = deploy_recorded(argv, monkeypatch)
    assert code == 0, err
    assert f"No changes: fleet {names.autoscaling_group} is up to date." in out
    assert writes == []


def _check_fleet(aws: Any, names: StackNames, subnets: list[str]) -> None:
    role = aws.iam.get_role(RoleName=names.agent_role)["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    policy = aws.iam.get_role_policy(RoleName=names.agent_role, PolicyName="rsql-agent")
    assert policy["PolicyDocument"] == iam.agent_policy(names, ACCOUNT, "rsql/redshift")
    bootstrap = aws.iam.get_role_policy(
        RoleName=names.agent_role, PolicyName="rsql-agent-bootstrap"
    )["PolicyDocument"]
    assert bootstrap["Statement"][0]["Resource"] == [
        "arn:aws:s3:::etl-dist/agent/rsql_agent-0.1.0-py3-none-any.whl",
        "arn:aws:s3:::etl-dist/scripts/*",
    ]
    profile = aws.iam.get_instance_profile(InstanceProfileName=names.agent_role)
    assert [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]] == [names.agent_role]

    (version,) = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName=names.launch_template, Versions=["$Latest"]
    )["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    assert data["ImageId"] == (
        "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    )
    assert data["IamInstanceProfile"] == {"Name": names.agent_role}
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    script = base64.b64decode(data["UserData"]).decode()
    assert "RSQL_AGENT_CONCURRENCY=4\n" in script
    assert f"RSQL_AGENT_LIFECYCLE_HOOK_NAME={names.lifecycle_hook}\n" in script

    (group,) = aws.autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[names.autoscaling_group]
    )["AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 6, 0)
    assert set(group["VPCZoneIdentifier"].split(",")) == set(subnets)
    mixed = group["MixedInstancesPolicy"]
    assert [o["InstanceType"] for o in mixed["LaunchTemplate"]["Overrides"]] == [
        "m5.large",
        "m5a.large",
    ]
    assert mixed["LaunchTemplate"]["LaunchTemplateSpecification"]["Version"] == "$Latest"
    assert mixed["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 0
    assert group["CapacityRebalance"] is True
    tags = {t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in group["Tags"]}
    assert tags["rsql:lifecycle-hook"] == (names.lifecycle_hook, True)
    assert tags["rsql:stack"] == (names.stack_name, True)
    assert {m["Metric"] for m in group["EnabledMetrics"]} >= {"GroupInServiceInstances"}

    (hook,) = aws.autoscaling.describe_lifecycle_hooks(
        AutoScalingGroupName=names.autoscaling_group
    )["LifecycleHooks"]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert (hook["HeartbeatTimeout"], hook["DefaultResult"]) == (300, "CONTINUE")

    policies = {
        p["PolicyName"]: p
        for p in aws.autoscaling.describe_policies(AutoScalingGroupName=names.autoscaling_group)[
            "ScalingPolicies"
        ]
    }
    out, scale_in = policies[names.scaling_policy("out")], policies[names.scaling_policy("in")]
    assert [s["ScalingAdjustment"] for s in out["StepAdjustments"]] == [1, 2, 4, 8]
    assert out["StepAdjustments"][0]["MetricIntervalUpperBound"] == 4.0  # one host's slots
    assert [s["ScalingAdjustment"] for s in scale_in["StepAdjustments"]] == [-1]
    alarms = {
        a["AlarmName"]: a
        for a in aws.client("cloudwatch").describe_alarms(
            AlarmNames=[names.scaling_policy("out"), names.scaling_policy("in")]
        )["MetricAlarms"]
    }
    assert alarms[names.scaling_policy("out")]["AlarmActions"] == [out["PolicyARN"]]
    assert alarms[names.scaling_policy("in")]["AlarmActions"] == [scale_in["PolicyARN"]]
    assert alarms[names.scaling_policy("in")]["Threshold"] == 4.0
    assert alarms[names.scaling_policy("in")]["EvaluationPeriods"] == scaling.IDLE_MINUTES


def test_a_changed_option_is_updated_in_place(
    names: StackNames, subnets: list[str], aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = fleet_args(names, subnets, "--max", "6", "--spot", "--concurrency", "4")
    assert run(argv)[0] == 0
    code, _, err, writes = deploy_recorded(
        fleet_args(names, subnets, "--max", "8", "--spot", "--concurrency", "4"), monkeypatch
    )
    assert code == 0, err
    assert writes == ["UpdateAutoScalingGroup"]
    code, _out, err, writes = deploy_recorded(
        fleet_args(names, subnets, "--max", "8", "--spot", "--concurrency", "6"), monkeypatch
    )
    assert code == 0, err
    # A new template version (the hosts' settings), and the thresholds of a host's worth.
    assert writes == [
        "CreateLaunchTemplateVersion",
        "PutScalingPolicy",
        "PutMetricAlarm",
        "PutMetricAlarm",
    ]
    (version,) = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName=names.launch_template, Versions=["$Latest"]
    )["LaunchTemplateVersions"]
    assert (
        "RSQL_AGENT_CONCURRENCY=6\n"
        in base64.b64decode(version["LaunchTemplateData"]["UserData"]).decode()
    )


def test_status_shows_the_fleet(names: StackNames, subnets: list[str]) -> None:
    argv = fleet_args(names, subnets, "--min", "1", "--max", "8", "--spot", "--concurrency", "6")
    assert run(argv)[0] == 0
    code, out, err = run(["fleet", "status", "--stack-name", names.stack_name, "--json"])
    assert code == 0, err
    status = json.loads(out)
    assert (status["min"], status["max"], status["desired"]) == (1, 8, 1)
    assert status["lifecycle_hook"]["name"] == names.lifecycle_hook
    assert set(status["scaling"]) == {names.scaling_policy("out"), names.scaling_policy("in")}
    code, out, err = run(["fleet", "status", "--stack-name", names.stack_name])
    assert code == 0 and f"Drain hook  {names.lifecycle_hook}" in out


def test_the_user_data_installs_the_agent_its_settings_and_the_scripts() -> None:
    settings = {"RSQL_AGENT_ACTIVITY_ARN": "arn:x", "AWS_REGION": "eu-west-1"}
    boot = userdata.Boot(WHEEL, SCRIPTS, settings)
    script = userdata.render(boot)
    assert len(script.encode()) < userdata.MAX_USER_DATA_BYTES
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert userdata.INSTALLER.read_text() in script
    assert userdata.UNIT.read_text() in script
    assert f"aws s3 cp {WHEEL} /opt/rsql-agent-dist/rsql_agent-0.1.0-py3-none-any.whl" in script
    assert f"aws s3 sync --no-progress {SCRIPTS} /opt/rsql-agent-dist/scripts" in script
    assert "RSQL_AGENT_ACTIVITY_ARN=arn:x\nAWS_REGION=eu-west-1\n" in script
    assert script.rstrip().endswith("--env /opt/rsql-agent-dist/agent.env")
    local = userdata.render(userdata.Boot("rsql-agent==0.1.0", "/opt/etl/scripts", {}))
    assert "AGENT=rsql-agent==0.1.0\n" in local and "SCRIPTS=/opt/etl/scripts" in local
    assert "aws s3" not in local


def test_what_the_fleet_reads_and_writes_is_what_the_agent_publishes_and_reads() -> None:
    from agent import metrics as agent_metrics
    from agent.settings import ENV_PREFIX, Settings
    from cloud import metrics
    from cloud.deploy import DesiredStack
    from cloud.fleet import DesiredFleet, FleetSpec

    assert set(metrics.AGENT_METRICS) <= set(agent_metrics.UNITS)
    assert Settings.model_fields["metrics_namespace"].default == metrics.AGENT_NAMESPACE
    spec = FleetSpec(
        subnets=("subnet-0a1b2c3d",),
        instance_types=("m5.large",),
        agent_source=WHEEL,
        scripts=SCRIPTS,
    )
    settings = DesiredFleet(DesiredStack(StackNames("rsql"), ACCOUNT), spec).agent_settings
    ours = [key.removeprefix(ENV_PREFIX).lower() for key in settings if key.startswith(ENV_PREFIX)]
    assert set(ours) <= set(Settings.model_fields), set(ours) - set(Settings.model_fields)
    assert settings["RSQL_AGENT_METRICS_LOG_GROUP"] == "/rsql/metrics"


def test_destroy_drains_the_hosts_then_deletes_everything(
    names: StackNames, subnets: list[str], aws: Any
) -> None:
    assert run(fleet_args(names, subnets, "--min", "1"))[0] == 0
    # The stack stays while its fleet polls its activity.
    code, _, err = run(["destroy", "--stack-name", names.stack_name, "--yes"])
    assert code == 1 and "delete it first (rsql-cloud fleet destroy" in err
    code, out, _ = run(["fleet", "destroy", "--stack-name", names.stack_name])
    assert code == 1  # not on a terminal: --yes is required
    code, out, err = run(["fleet", "destroy", "--stack-name", names.stack_name, "--yes"])
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines()]
    assert lines[1:5] == [
        f"Deleting CloudWatch alarm: {names.scaling_policy('in')}",
        f"Deleting scaling policy: {names.scaling_policy('in')}",
        f"Deleting CloudWatch alarm: {names.scaling_policy('out')}",
        f"Deleting scaling policy: {names.scaling_policy('out')}",
    ]
    # The hook stays until the group goes: scaling to 0 drains every host through it.
    assert lines[5:7] == [
        f"Scaling Auto Scaling group to 0 (each host drains its jobs first): "
        f"{names.autoscaling_group}",
        f"Deleting Auto Scaling group once its hosts are gone: {names.autoscaling_group}",
    ]
    assert not any("lifecycle hook" in line for line in lines)
    assert (
        aws.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[names.autoscaling_group]
        )["AutoScalingGroups"]
        == []
    )
    with pytest.raises(aws.iam.exceptions.NoSuchEntityException):
        aws.iam.get_role(RoleName=names.agent_role)
    assert run(["fleet", "destroy", "--stack-name", names.stack_name, "--yes"])[1].startswith(
        "Nothing to delete"
    )
