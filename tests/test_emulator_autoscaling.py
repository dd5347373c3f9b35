"""The emulator runs Auto Scaling termination lifecycle hooks as AWS does (moto does not):
Terminating:Wait, heartbeats, one completion, then the instance is terminated."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from fleet_helpers import instance_state, lifecycle_calls, make_group


def test_a_termination_hook_holds_the_instance_until_the_action_completes(
    aws: Any, uid: str
) -> None:
    group = make_group(aws, uid)
    aws.autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=group.instance_id, ShouldDecrementDesiredCapacity=True
    )
    assert instance_state(aws, group) == "Terminating:Wait"
    target = {
        "AutoScalingGroupName": group.name,
        "LifecycleHookName": group.hook,
        "InstanceId": group.instance_id,
    }
    aws.autoscaling.record_lifecycle_action_heartbeat(**target)
    aws.autoscaling.record_lifecycle_action_heartbeat(**target)
    assert instance_state(aws, group) == "Terminating:Wait"
    aws.autoscaling.complete_lifecycle_action(LifecycleActionResult="CONTINUE", **target)
    assert instance_state(aws, group) is None
    [described] = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group.name])[
        "AutoScalingGroups"
    ]
    assert described["DesiredCapacity"] == 0 and described["Instances"] == []
    # As on AWS: the action is over, a second completion or a heartbeat is refused.
    with pytest.raises(ClientError, match="No active Lifecycle Action found") as refused:
        aws.autoscaling.complete_lifecycle_action(LifecycleActionResult="CONTINUE", **target)
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError, match="No active Lifecycle Action found"):
        aws.autoscaling.record_lifecycle_action_heartbeat(**target)
    calls = [(c["action"], c["result"], c["accepted"]) for c in lifecycle_calls(aws, group)]
    assert calls == [
        ("RecordLifecycleActionHeartbeat", None, True),
        ("RecordLifecycleActionHeartbeat", None, True),
        ("CompleteLifecycleAction", "CONTINUE", True),
        ("CompleteLifecycleAction", "CONTINUE", False),
        ("RecordLifecycleActionHeartbeat", None, False),
    ]


def test_no_open_action_no_heartbeat_and_a_group_without_hook_terminates_at_once(
    aws: Any, uid: str
) -> None:
    group = make_group(aws, uid)
    with pytest.raises(ClientError, match="No active Lifecycle Action found"):
        aws.autoscaling.record_lifecycle_action_heartbeat(
            AutoScalingGroupName=group.name,
            LifecycleHookName=group.hook,
            InstanceId=group.instance_id,
        )
    assert instance_state(aws, group) == "InService"
    plain = make_group(aws, uid + "-nohook", hook=False)
    aws.autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=plain.instance_id, ShouldDecrementDesiredCapacity=True
    )
    assert instance_state(aws, plain) is None
