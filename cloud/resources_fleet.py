"""The fleet's resources as models, each planning its own create/update and delete: the instance
profile, the launch template, the Auto Scaling group, its termination lifecycle hook and its
scaling policies (the agent role is a `Role`, the alarms `Alarm`s). cloud/fleet.py lists them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from cloud.remote import RemoteState
from cloud.resources import Instruction, Ref, Resource

if TYPE_CHECKING:
    from cloud.fleet import DesiredFleet

TERMINATING: Final = "autoscaling:EC2_INSTANCE_TERMINATING"
# The agent heartbeats the hook every minute while it drains; five missed ones and the
# instance goes anyway (DefaultResult CONTINUE: a dead agent must not keep it forever).
HOOK_HEARTBEAT_TIMEOUT_S: Final = 300
# What IAM takes a few seconds to make usable: a new instance profile in a launch.
_PROFILE_NOT_YET: Final = frozenset({"ValidationError", "InvalidParameterValue"})
_HOSTS_LEFT: Final = frozenset({"ResourceInUse", "ScalingActivityInProgress"})


class FleetResource(Resource):
    """A resource of the fleet: `self.stack` is the stack it serves, `self.fleet` its settings."""

    def __init__(self, fleet: DesiredFleet, name: str) -> None:
        super().__init__(fleet.stack, name)
        self.fleet = fleet


class InstanceProfile(FleetResource):
    """The instance profile that hands the agent role to the hosts."""

    kind = "IAM instance profile"
    service = "iam"

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.instance_profile(self.name)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        role = self.fleet.names.agent_role
        described = self.describe(remote)
        plan = []
        if described is None:
            params = {"InstanceProfileName": self.name, "Tags": self.stack.tags()}
            plan.append(self.step(f"Creating {self.kind}", "create_instance_profile", params))
        roles = [r.get("RoleName") for r in (described or {}).get("Roles", [])]
        for other in roles:
            if other != role:  # a profile holds one role
                params = {"InstanceProfileName": self.name, "RoleName": other}
                what = f"Removing role {other} from {self.kind}"
                plan.append(self.step(what, "remove_role_from_instance_profile", params))
        if role not in roles:
            params = {"InstanceProfileName": self.name, "RoleName": role}
            what = f"Adding role {role} to {self.kind}"
            plan.append(self.step(what, "add_role_to_instance_profile", params))
        return plan

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        plan = [
            self.step(
                f"Removing role {r['RoleName']} from {self.kind}",
                "remove_role_from_instance_profile",
                {"InstanceProfileName": self.name, "RoleName": r["RoleName"]},
            )
            for r in (self.describe(remote) or {}).get("Roles", [])
        ]
        params = {"InstanceProfileName": self.name}
        return [*plan, self.step(f"Deleting {self.kind}", "delete_instance_profile", params)]


class LaunchTemplate(FleetResource):
    """A change is a new version; the group launches `$Latest`, so new hosts get it (running
    ones keep theirs until replaced: README, "Roll the fleet")."""

    kind = "EC2 launch template"
    service = "ec2"

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.launch_template(self.name)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        data = self.fleet.launch_template_data
        described = self.describe(remote)
        if described is None:
            params = {
                "LaunchTemplateName": self.name,
                "LaunchTemplateData": data,
                "TagSpecifications": [
                    {"ResourceType": "launch-template", "Tags": self.stack.tags()}
                ],
            }
            return [self.step(f"Creating {self.kind}", "create_launch_template", params)]
        if _contains(described.get("LaunchTemplateData") or {}, data):
            return []
        params = {"LaunchTemplateName": self.name, "LaunchTemplateData": data}
        what = f"Adding a version to {self.kind}"
        return [self.step(what, "create_launch_template_version", params)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        params = {"LaunchTemplateName": self.name}
        return [self.step(f"Deleting {self.kind}", "delete_launch_template", params)]


class AutoScalingGroup(FleetResource):
    kind = "Auto Scaling group"
    service = "autoscaling"
    status_key = "Status"  # "Delete in progress" while AWS deletes it

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.autoscaling_group(self.name)

    def going(self, described: dict[str, Any]) -> bool:
        return described.get("Status") == "Delete in progress"

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        fleet = self.fleet
        described = self.describe(remote)
        if described is not None and self.going(described):
            raise_going(self.name)
        metrics = {
            "AutoScalingGroupName": self.name,
            "Granularity": "1Minute",
            "Metrics": list(fleet.group_metrics),
        }
        collect = self.step("Collecting group metrics of", "enable_metrics_collection", metrics)
        if described is None:
            # The profile may be new: IAM takes a few seconds to let a launch use it.
            new_profile = any(step.operation == "create_instance_profile" for step in earlier)
            retry = _PROFILE_NOT_YET if new_profile else frozenset()
            params = {**fleet.group_settings, "DesiredCapacity": fleet.spec.min_size}
            params["Tags"] = fleet.group_tags
            create = self.step(
                f"Creating {self.kind}", "create_auto_scaling_group", params, retry_codes=retry
            )
            return [create, collect]
        plan = []
        if _group_drift(described, fleet.group_settings):
            what = f"Updating {self.kind}"
            plan.append(self.step(what, "update_auto_scaling_group", fleet.group_settings))
        have_tags = {
            (t.get("Key"), t.get("Value"), bool(t.get("PropagateAtLaunch")))
            for t in described.get("Tags", [])
        }
        missing = [
            {**t, "ResourceId": self.name, "ResourceType": "auto-scaling-group"}
            for t in fleet.group_tags
            if (t["Key"], t["Value"], t["PropagateAtLaunch"]) not in have_tags
        ]
        if missing:
            what = f"Tagging {self.kind}"
            plan.append(self.step(what, "create_or_update_tags", {"Tags": missing}))
        enabled = {m.get("Metric") for m in described.get("EnabledMetrics", [])}
        if not set(fleet.group_metrics) <= enabled:
            plan.append(collect)
        return plan

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        if self.fleet.force:
            # ForceDelete terminates the hosts at once and drops their lifecycle actions:
            # running jobs are killed (their tasks time out and are retried elsewhere).
            params = {"AutoScalingGroupName": self.name, "ForceDelete": True}
            what = f"Deleting {self.kind} and its hosts at once"
            return [self.step(what, "delete_auto_scaling_group", params)]
        # Scaling to zero goes through the termination hook: each agent drains its jobs. The
        # group can be deleted once its last host is gone (ResourceInUse until then).
        zero = {"AutoScalingGroupName": self.name, "MinSize": 0, "MaxSize": 0}
        zero["DesiredCapacity"] = 0
        delete = self.step(
            f"Deleting {self.kind} once its hosts are gone",
            "delete_auto_scaling_group",
            {"AutoScalingGroupName": self.name},
            retry_codes=_HOSTS_LEFT,
            retry_for_s=self.fleet.drain_wait_s,
            retry_delay_s=15.0,
        )
        what = f"Scaling {self.kind} to 0 (each host drains its jobs first)"
        return [self.step(what, "update_auto_scaling_group", zero), delete]


def _contains(have: Any, wanted: Any) -> bool:
    """Whether `have` holds every value of `wanted` (AWS may add fields of its own)."""
    if isinstance(wanted, dict):
        return isinstance(have, dict) and all(_contains(have.get(k), v) for k, v in wanted.items())
    return bool(have == wanted)


def raise_going(name: str) -> None:
    from cloud.resources import DeployError

    raise DeployError(
        f"Auto Scaling group {name} is being deleted: wait until it is gone "
        "(rsql-cloud fleet status), then deploy again"
    )


def _group_drift(described: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for key, value in wanted.items():
        have = described.get(key)
        if key == "VPCZoneIdentifier":
            if set(str(have or "").split(",")) != set(value.split(",")):
                return True
        elif key == "MixedInstancesPolicy":
            if _policy_view(have) != _policy_view(value):
                return True
        elif have != value:
            return True
    return False


def _policy_view(policy: Any) -> Any:
    """What we set of a mixed instances policy (AWS adds the template id and defaults)."""
    if not isinstance(policy, dict):
        return None
    template = policy.get("LaunchTemplate", {})
    spec = template.get("LaunchTemplateSpecification", {})
    distribution = policy.get("InstancesDistribution", {})
    return (
        spec.get("LaunchTemplateName"),
        spec.get("Version"),
        [o.get("InstanceType") for o in template.get("Overrides", [])],
        {k: distribution.get(k) for k in _DISTRIBUTION_KEYS},
    )


_DISTRIBUTION_KEYS: Final = (
    "OnDemandBaseCapacity",
    "OnDemandPercentageAboveBaseCapacity",
    "SpotAllocationStrategy",
)


class LifecycleHook(FleetResource):
    """The termination hook the agents drain for before their host goes (scale-in, Spot,
    instance refresh)."""

    kind = "termination lifecycle hook"
    service = "autoscaling"

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "AutoScalingGroupName": self.fleet.names.autoscaling_group,
            "LifecycleHookName": self.name,
            "LifecycleTransition": TERMINATING,
            "HeartbeatTimeout": HOOK_HEARTBEAT_TIMEOUT_S,
            "DefaultResult": "CONTINUE",
        }

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.lifecycle_hook(self.fleet.names.autoscaling_group, self.name)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        described = self.describe(remote)
        wanted = self.settings
        if described is not None and all(described.get(k) == v for k, v in wanted.items()):
            return []
        verb = "Creating" if described is None else "Updating"
        return [self.step(f"{verb} {self.kind}", "put_lifecycle_hook", wanted)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        # Not on its own: the hook must outlive the group's scale to 0, so that every host
        # drains before it goes; deleting the group deletes its hooks.
        return []


def _steps(adjustments: Any) -> list[dict[str, float]]:
    """Step adjustments as comparable numbers (AWS answers the bounds as floats)."""
    return [{k: float(v) for k, v in step.items()} for step in adjustments or []]


class ScalingPolicy(FleetResource):
    """A step scaling policy; its ARN (generated by AWS) is what its alarm calls."""

    kind = "scaling policy"
    service = "autoscaling"

    def __init__(self, fleet: DesiredFleet, name: str, settings: dict[str, Any]) -> None:
        super().__init__(fleet, name)
        self.settings = {
            "AutoScalingGroupName": fleet.names.autoscaling_group,
            "PolicyName": name,
            "PolicyType": "StepScaling",
            **settings,
        }

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.scaling_policy(self.fleet.names.autoscaling_group, self.name)

    def arn(self, remote: RemoteState) -> str | Ref:
        """The policy's ARN, or a reference to the answer of the plan's PutScalingPolicy."""
        described = self.describe(remote)
        if described is not None and not self._differs(described):
            return str(described["PolicyARN"])
        return Ref(self.name, "PolicyARN")

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        described = self.describe(remote)
        if described is not None and not self._differs(described):
            return []
        verb = "Creating" if described is None else "Updating"
        what = f"{verb} {self.kind}"
        return [self.step(what, "put_scaling_policy", self.settings, produces=self.name)]

    def _differs(self, described: dict[str, Any]) -> bool:
        for key, value in self.settings.items():
            have = described.get(key)
            if key == "StepAdjustments":
                have, value = _steps(have), _steps(value)
            if have != value:
                return True
        return False

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        params = {
            "AutoScalingGroupName": self.fleet.names.autoscaling_group,
            "PolicyName": self.name,
        }
        return [self.step(f"Deleting {self.kind}", "delete_policy", params)]
