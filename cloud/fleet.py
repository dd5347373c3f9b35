"""`rsql-cloud fleet deploy|destroy`: the Auto Scaling group of agent hosts, plan-then-apply
like `rsql-cloud deploy` (cloud/deploy.py) and with the same resource models.

The fleet of stack `rsql`:

- IAM role and instance profile `rsql-agent-role`: inline policy `rsql-agent`, exactly what
  `rsql-cloud iam agent-policy` prints; `rsql-agent-bootstrap` (s3:GetObject, s3:ListBucket on
  those objects) only when the agent or the scripts come from S3.
- launch template `rsql-agents`: Amazon Linux 2023 (`resolve:ssm:` its latest image, for the
  instance types' architecture) unless `--image-id`; IMDSv2 only, instance tags in metadata;
  user data from cloud/userdata.py.
- Auto Scaling group `rsql-agents`: the subnets, min and max, a mixed instances policy over the
  instance types (Spot with `--spot`), group metrics on.
- termination lifecycle hook `rsql-drain`.
- scaling policies `rsql-agents-scale-out` and `rsql-agents-scale-in`, each with its alarm of
  the same name (cloud/scaling.py).

Input is checked before anything is planned, with read-only calls: every subnet exists (and all
are in one VPC), every instance type exists and is offered in a subnet's zone, one CPU
architecture, the security groups and image exist. A mistake is one line and changes nothing.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import ClientError

from agent.schema import LIFECYCLE_HOOK_TAG
from agent.settings import ENV_PREFIX
from cloud import iam, scaling, userdata
from cloud.aws import Aws, CloudError, error_code
from cloud.deploy import STACK_TAG, DesiredStack
from cloud.metrics import GROUP_METRICS
from cloud.names import DEFAULT_SECRET_ID, StackNames
from cloud.remote import RemoteState
from cloud.resources import Instruction, Resource, Role
from cloud.resources_fleet import (
    AutoScalingGroup,
    InstanceProfile,
    LaunchTemplate,
    LifecycleHook,
    ScalingPolicy,
)
from cloud.resources_monitoring import Alarm

_AMI_PARAMETER: Final = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
_SUBNET_RE: Final = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_GROUP_RE: Final = re.compile(r"^sg-[0-9a-f]{8,17}$")
_IMAGE_RE: Final = re.compile(r"^ami-[0-9a-f]{8,17}$")
_TYPE_RE: Final = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_S3_RE: Final = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,62}/")
# `fleet destroy` waits this long for the hosts to drain (the agent's default drain limit on a
# scale-in is 4 hours) before it gives up.
DRAIN_WAIT_S: Final = 4.5 * 3600


@dataclass(frozen=True)
class FleetSpec:
    """What the operator asks for (`fleet deploy` options)."""

    subnets: tuple[str, ...]
    instance_types: tuple[str, ...]
    agent_source: str
    scripts: str
    min_size: int = 0
    max_size: int = 4
    spot: bool = False
    on_demand_base: int = 0
    concurrency: int = 8
    image_id: str | None = None
    security_groups: tuple[str, ...] = ()
    secret_id: str = DEFAULT_SECRET_ID

    def problems(self) -> list[str]:
        """Mistakes visible without AWS, one line each."""
        found = [
            f"--subnets: not a subnet id: {s!r}" for s in self.subnets if not _SUBNET_RE.match(s)
        ]
        found += [
            f"--instance-types: not an instance type: {t!r}"
            for t in self.instance_types
            if not _TYPE_RE.match(t)
        ]
        found += [
            f"--security-groups: not a security group id: {g!r}"
            for g in self.security_groups
            if not _GROUP_RE.match(g)
        ]
        if not self.subnets:
            found.append("--subnets: at least one subnet is required")
        if not self.instance_types:
            found.append("--instance-types: at least one instance type is required")
        if self.image_id is not None and not _IMAGE_RE.match(self.image_id):
            found.append(f"--image-id: not an image id: {self.image_id!r}")
        if not 0 <= self.min_size <= self.max_size or self.max_size < 1:
            found.append(
                "--min/--max: need 0 <= min <= max and max >= 1, got "
                f"{self.min_size}/{self.max_size}"
            )
        if not 0 <= self.on_demand_base <= self.max_size:
            found.append(f"--on-demand-base: must be 0 to --max, got {self.on_demand_base}")
        if not 1 <= self.concurrency <= 1024:
            found.append(f"--concurrency: must be 1 to 1024, got {self.concurrency}")
        if not (self.scripts.startswith("s3://") or self.scripts.startswith("/")):
            found.append(
                f"--scripts: an s3://bucket/prefix/ or an absolute path on the image, got "
                f"{self.scripts!r}"
            )
        for name, source in (("--agent-source", self.agent_source), ("--scripts", self.scripts)):
            if source.startswith("s3://") and not re.match(
                r"^s3://[a-z0-9][a-z0-9.-]{1,62}/", source
            ):
                found.append(f"{name}: not s3://bucket/key: {source!r}")
        return found


@dataclass(frozen=True)
class DesiredFleet:
    """The fleet's resources for a spec; `architecture` comes from the instance types."""

    stack: DesiredStack
    spec: FleetSpec
    architecture: str = "x86_64"
    force: bool = False  # destroy: terminate at once instead of draining
    drain_wait_s: float = DRAIN_WAIT_S
    group_metrics: tuple[str, ...] = field(default=GROUP_METRICS)

    @property
    def names(self) -> StackNames:
        return self.stack.names

    def resources(self) -> list[Resource]:
        """Every resource of the fleet, each after the ones it uses."""
        names = self.names
        concurrency, activity_arn = self.spec.concurrency, self.stack.activity_arn
        out = ScalingPolicy(
            self, names.scaling_policy("out"), scaling.scale_out_policy(concurrency)
        )
        scale_in = ScalingPolicy(self, names.scaling_policy("in"), scaling.scale_in_policy())
        return [
            Role(
                self.stack,
                names.agent_role,
                trust=iam.trust_policy(iam.EC2_PRINCIPAL),
                policies=self.role_policies,
                description=f"The {names.autoscaling_group} hosts that run rsql-agent",
            ),
            InstanceProfile(self, names.agent_role),
            LaunchTemplate(self, names.launch_template),
            AutoScalingGroup(self, names.autoscaling_group),
            LifecycleHook(self, names.lifecycle_hook),
            out,
            _ScalingAlarm(self, out, scaling.scale_out_alarm(activity_arn)),
            scale_in,
            _ScalingAlarm(
                self,
                scale_in,
                scaling.scale_in_alarm(
                    self.stack.activity_arn, names.activity, self.spec.concurrency
                ),
            ),
        ]

    @functools.cached_property
    def boot(self) -> userdata.Boot:
        return userdata.Boot(self.spec.agent_source, self.spec.scripts, self.agent_settings)

    @property
    def role_policies(self) -> dict[str, dict[str, Any]]:
        account = self.stack.account
        policies = {
            iam.AGENT_POLICY_NAME: iam.agent_policy(self.names, account, self.spec.secret_id)
        }
        bootstrap = iam.bootstrap_policy(self.boot.s3_sources, account)
        if bootstrap is not None:
            policies[iam.AGENT_BOOTSTRAP_POLICY_NAME] = bootstrap
        return policies

    @property
    def agent_settings(self) -> dict[str, str]:
        """The hosts' /etc/rsql-agent/agent.env."""
        names, region = self.names, self.stack.account.region
        settings = {
            "ACTIVITY_ARN": self.stack.activity_arn,
            "SECRET_ID": self.spec.secret_id,
            "SCRIPT_DIR": userdata.SCRIPT_DIR,
            "LOG_DIR": "/var/log/rsql-agent",
            "STATE_DIR": "/var/lib/rsql-agent",
            "CONCURRENCY": str(self.spec.concurrency),
            "LOG_GROUP": names.log_group,
            "JOB_AUDIT_TABLE": names.job_audit_table,
            "METRICS_LOG_GROUP": names.metrics_log_group,
            "AUTOSCALING_GROUP_NAME": names.autoscaling_group,
            "LIFECYCLE_HOOK_NAME": names.lifecycle_hook,
        }
        return {
            **{f"{ENV_PREFIX}{key}": value for key, value in settings.items()},
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
        }

    @functools.cached_property
    def launch_template_data(self) -> dict[str, Any]:
        image = self.spec.image_id or f"resolve:ssm:{_AMI_PARAMETER.format(arch=self.architecture)}"
        data: dict[str, Any] = {
            "ImageId": image,
            "IamInstanceProfile": {"Name": self.names.agent_role},
            "UserData": userdata.encoded(userdata.render(self.boot)),
            # IMDSv2 only, one hop (containers on the host cannot reach it); instance tags
            # readable there (the agent finds its lifecycle hook in them).
            "MetadataOptions": {
                "HttpTokens": "required",
                "HttpPutResponseHopLimit": 1,
                "HttpEndpoint": "enabled",
                "InstanceMetadataTags": "enabled",
            },
        }
        if self.spec.security_groups:
            data["SecurityGroupIds"] = list(self.spec.security_groups)
        return data

    @property
    def group_settings(self) -> dict[str, Any]:
        """CreateAutoScalingGroup/UpdateAutoScalingGroup settings (not the desired capacity,
        which the scaling policies own once the group exists)."""
        spec = self.spec
        distribution = {
            "OnDemandBaseCapacity": spec.on_demand_base if spec.spot else 0,
            "OnDemandPercentageAboveBaseCapacity": 0 if spec.spot else 100,
            "SpotAllocationStrategy": "price-capacity-optimized",
        }
        return {
            "AutoScalingGroupName": self.names.autoscaling_group,
            "MinSize": spec.min_size,
            "MaxSize": spec.max_size,
            "VPCZoneIdentifier": ",".join(spec.subnets),
            "MixedInstancesPolicy": {
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateName": self.names.launch_template,
                        "Version": "$Latest",
                    },
                    "Overrides": [{"InstanceType": t} for t in spec.instance_types],
                },
                "InstancesDistribution": distribution,
            },
            # Spot: replace a host AWS says is at risk before it is interrupted.
            "CapacityRebalance": spec.spot,
        }

    @property
    def group_tags(self) -> list[dict[str, Any]]:
        names = self.names
        return [
            {"Key": STACK_TAG, "Value": names.stack_name, "PropagateAtLaunch": True},
            {"Key": LIFECYCLE_HOOK_TAG, "Value": names.lifecycle_hook, "PropagateAtLaunch": True},
            {"Key": "Name", "Value": f"{names.stack_name}-agent", "PropagateAtLaunch": True},
        ]


class _ScalingAlarm(Alarm):
    """The alarm that calls a scaling policy: its action is the policy's ARN."""

    def __init__(self, fleet: DesiredFleet, policy: ScalingPolicy, spec: dict[str, Any]) -> None:
        super().__init__(fleet.stack, policy.name, spec)
        self.policy = policy

    def plan(self, remote: RemoteState, earlier: Any) -> list[Instruction]:
        self.spec["AlarmActions"] = [self.policy.arn(remote)]
        return super().plan(remote, earlier)


# -- checking the input against the account --------------------------------------------------------


def check_inputs(aws: Aws, spec: FleetSpec) -> str:
    """Raise a one-line CloudError for anything the account does not have; return the
    instance types' CPU architecture."""
    if problems := spec.problems():
        raise CloudError("\n".join(problems))
    ec2 = aws.client("ec2")
    subnets = _ask(ec2.describe_subnets, "--subnets", SubnetIds=list(spec.subnets))["Subnets"]
    vpcs = {s["VpcId"] for s in subnets}
    if len(vpcs) > 1:
        raise CloudError(f"--subnets: all subnets must be in one VPC, they are in {sorted(vpcs)}")
    zones = {s["AvailabilityZone"] for s in subnets}
    types = _ask(
        ec2.describe_instance_types, "--instance-types", InstanceTypes=list(spec.instance_types)
    )
    architectures = {
        t["InstanceType"]: set(t["ProcessorInfo"]["SupportedArchitectures"]) & {"x86_64", "arm64"}
        for t in types["InstanceTypes"]
    }
    common = set.intersection(*architectures.values()) if architectures else set()
    if not common:
        raise CloudError(
            "--instance-types: the types must share one CPU architecture (one image runs on "
            f"all): {', '.join(f'{t} {sorted(a)}' for t, a in sorted(architectures.items()))}"
        )
    _check_offered(ec2, spec.instance_types, zones)
    if spec.security_groups:
        groups = _ask(
            ec2.describe_security_groups, "--security-groups", GroupIds=list(spec.security_groups)
        )
        outside = [g["GroupId"] for g in groups["SecurityGroups"] if g["VpcId"] not in vpcs]
        if outside:
            raise CloudError(f"--security-groups: {', '.join(outside)} not in the subnets' VPC")
    if spec.image_id:
        _ask(ec2.describe_images, "--image-id", ImageIds=[spec.image_id])
    return "x86_64" if "x86_64" in common else "arm64"


def _check_offered(ec2: Any, instance_types: tuple[str, ...], zones: set[str]) -> None:
    offers = ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[
            {"Name": "instance-type", "Values": list(instance_types)},
            {"Name": "location", "Values": sorted(zones)},
        ],
    )["InstanceTypeOfferings"]
    offered = {o["InstanceType"] for o in offers}
    missing = [t for t in instance_types if t not in offered]
    if missing:
        raise CloudError(
            f"--instance-types: {', '.join(missing)} not offered in {', '.join(sorted(zones))} "
            "(the subnets' zones)"
        )


def _ask(call: Any, option: str, **params: Any) -> dict[str, Any]:
    try:
        return dict(call(**params))
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message") or error_code(exc)
        raise CloudError(f"{option}: {message} ({error_code(exc)})") from None


# -- the commands' logic -------------------------------------------------------------------------


def deploy_fleet(
    aws: Aws, names: StackNames, spec: FleetSpec, *, dry_run: bool, say: Any = print
) -> list[Instruction]:
    """Check the input, plan, and (unless dry_run) apply; returns the plan."""
    from cloud.deploy import execute
    from cloud.remote import AwsRemoteState

    architecture = check_inputs(aws, spec)
    stack = DesiredStack(names, aws.account)
    remote = AwsRemoteState(aws)
    if remote.activity(stack.activity_arn) is None:
        raise CloudError(
            f"stack {names.stack_name} is not deployed (no activity {names.activity}): run "
            f"`rsql-cloud deploy --stack-name {names.stack_name}` first"
        )
    fleet = DesiredFleet(stack, spec, architecture)
    plan: list[Instruction] = []
    for resource in fleet.resources():
        plan += resource.plan(remote, plan)
    if not dry_run:
        execute(aws, plan, say)
    return plan


def destroy_plan(aws: Aws, names: StackNames, *, force: bool) -> list[Instruction]:
    """What deleting the fleet takes (nothing when there is none), users before used."""
    from cloud.remote import AwsRemoteState

    placeholder = FleetSpec(subnets=(), instance_types=(), agent_source="-", scripts="/")
    fleet = DesiredFleet(DesiredStack(names, aws.account), placeholder, force=force)
    remote = AwsRemoteState(aws)
    plan: list[Instruction] = []
    for resource in reversed(fleet.resources()):
        plan += resource.plan_delete(remote)
    return plan
