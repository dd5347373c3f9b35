"""`rsql-cloud fleet status`: the group's capacity, its hosts, its lifecycle hook, its scaling
alarms' states and its latest scaling activities."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from cloud.aws import Aws, CloudError
from cloud.names import StackNames
from cloud.remote import AwsRemoteState

RECENT_ACTIVITIES: Final = 5


def fleet_status(aws: Aws, names: StackNames) -> dict[str, Any]:
    """Everything `fleet status` shows, as plain data (`--json` prints it)."""
    remote = AwsRemoteState(aws)
    group = remote.autoscaling_group(names.autoscaling_group)
    if group is None:
        raise CloudError(
            f"stack {names.stack_name} has no fleet ({names.autoscaling_group}): create it with "
            "`rsql-cloud fleet deploy`"
        )
    hook = remote.lifecycle_hook(names.autoscaling_group, names.lifecycle_hook)
    scaling = {}
    for direction in ("out", "in"):
        name = names.scaling_policy(direction)
        alarm = remote.alarm(name)
        scaling[name] = {
            "policy": remote.scaling_policy(names.autoscaling_group, name) is not None,
            "alarm_state": (alarm or {}).get("StateValue"),
        }
    activities = aws.client("autoscaling").describe_scaling_activities(
        AutoScalingGroupName=names.autoscaling_group, MaxRecords=RECENT_ACTIVITIES
    )["Activities"]
    instances = group.get("Instances", [])
    return {
        "group": names.autoscaling_group,
        "desired": group.get("DesiredCapacity"),
        "min": group.get("MinSize"),
        "max": group.get("MaxSize"),
        "in_service": sum(1 for i in instances if i.get("LifecycleState") == "InService"),
        "instances": [
            {
                "instance_id": i.get("InstanceId"),
                "instance_type": i.get("InstanceType"),
                "zone": i.get("AvailabilityZone"),
                "state": i.get("LifecycleState"),
                "health": i.get("HealthStatus"),
                "template_version": (i.get("LaunchTemplate") or {}).get("Version"),
            }
            for i in instances
        ],
        "lifecycle_hook": None
        if hook is None
        else {
            "name": hook.get("LifecycleHookName"),
            "heartbeat_timeout_s": hook.get("HeartbeatTimeout"),
            "default_result": hook.get("DefaultResult"),
        },
        "scaling": scaling,
        "recent_activities": [
            {
                "start": _iso(a.get("StartTime")),
                "status": a.get("StatusCode"),
                "description": a.get("Description"),
            }
            for a in activities
        ],
    }


def status_lines(status: dict[str, Any]) -> list[str]:
    lines = [
        f"Fleet       {status['group']}",
        f"Capacity    desired {status['desired']}, min {status['min']}, max {status['max']}, "
        f"in service {status['in_service']}",
    ]
    hook = status["lifecycle_hook"]
    lines.append(
        "Drain hook  missing (run `rsql-cloud fleet deploy`)"
        if hook is None
        else f"Drain hook  {hook['name']} (heartbeat timeout {hook['heartbeat_timeout_s']} s, "
        f"then {hook['default_result']})"
    )
    for name, scaling in status["scaling"].items():
        state = scaling["alarm_state"] or "no alarm"
        policy = "" if scaling["policy"] else " (policy missing)"
        lines.append(f"Scaling     {name}: alarm {state}{policy}")
    lines.append("")
    if status["instances"]:
        lines.append("INSTANCE             TYPE          ZONE          STATE          HEALTH   LT")
        for i in status["instances"]:
            lines.append(
                f"{i['instance_id']:<20} {i['instance_type'] or '-':<13} {i['zone'] or '-':<13} "
                f"{i['state'] or '-':<14} {i['health'] or '-':<8} {i['template_version'] or '-'}"
            )
    else:
        lines.append("No hosts.")
    if status["recent_activities"]:
        lines += ["", "Recent scaling activities:"]
        lines += [
            f"  {a['start'] or '-'}  {a['status'] or '-':<11} {a['description'] or ''}"
            for a in status["recent_activities"]
        ]
    return lines


def _iso(moment: Any) -> str | None:
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None
