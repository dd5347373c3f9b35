"""The CloudWatch metrics the fleet's scaling, the alarms and the dashboard read, by name, and
the pieces of a metric-math alarm (docs/metrics.md says what each metric means).

Two sources:
- Step Functions' own, namespace `AWS/States`: per activity (dimension `ActivityArn`) and per
  state machine (dimension `StateMachineArn`). The service publishes them whether or not any
  host runs, so they are what sees work waiting for a fleet of zero.
- The agents', namespace `RSQL/Agent` (agent/metrics.py, embedded metric format, once a
  minute per host), under dimension `Activity` (the activity's name) for the whole fleet.
And Auto Scaling's group metrics (`AWS/AutoScaling`, dimension `AutoScalingGroupName`), which
`rsql-cloud fleet deploy` turns on.
"""

from __future__ import annotations

from typing import Any, Final

from agent.metrics import ACTIVITY_DIMENSION as ACTIVITY_DIMENSION

STATES_NAMESPACE: Final = "AWS/States"
AGENT_NAMESPACE: Final = "RSQL/Agent"
AUTOSCALING_NAMESPACE: Final = "AWS/AutoScaling"
PERIOD_S: Final = 60

# AWS/States, per activity (ActivityArn).
ACTIVITIES_SCHEDULED: Final = "ActivitiesScheduled"
ACTIVITIES_STARTED: Final = "ActivitiesStarted"
ACTIVITIES_SUCCEEDED: Final = "ActivitiesSucceeded"
ACTIVITIES_FAILED: Final = "ActivitiesFailed"
ACTIVITIES_TIMED_OUT: Final = "ActivitiesTimedOut"
ACTIVITIES_HEARTBEAT_TIMED_OUT: Final = "ActivitiesHeartbeatTimedOut"
ACTIVITY_SCHEDULE_TIME: Final = "ActivityScheduleTime"  # ms from scheduled to started
ACTIVITY_RUN_TIME: Final = "ActivityRunTime"
# AWS/States, per state machine (StateMachineArn).
EXECUTIONS_STARTED: Final = "ExecutionsStarted"
EXECUTIONS_SUCCEEDED: Final = "ExecutionsSucceeded"
EXECUTIONS_FAILED: Final = "ExecutionsFailed"
EXECUTIONS_TIMED_OUT: Final = "ExecutionsTimedOut"
EXECUTIONS_ABORTED: Final = "ExecutionsAborted"
EXECUTION_TIME: Final = "ExecutionTime"
# RSQL/Agent, per fleet (ACTIVITY_DIMENSION = the activity's name); agent/metrics.py publishes
# them (tests/test_fleet.py checks every name of AGENT_METRICS against it).
SLOTS: Final = "Slots"
SLOTS_BUSY: Final = "SlotsBusy"
UTILIZATION: Final = "Utilization"
POLLING: Final = "Polling"
JOBS_STARTED: Final = "JobsStarted"
JOBS_COMPLETED: Final = "JobsCompleted"
JOBS_FAILED: Final = "JobsFailed"
JOBS_TIMED_OUT: Final = "JobsTimedOut"
JOBS_CANCELLED: Final = "JobsCancelled"
JOB_DURATION: Final = "JobDuration"
TASK_WAIT_TIME: Final = "TaskWaitTime"
AGENT_METRICS: Final = (
    SLOTS,
    SLOTS_BUSY,
    UTILIZATION,
    POLLING,
    JOBS_STARTED,
    JOBS_COMPLETED,
    JOBS_FAILED,
    JOBS_TIMED_OUT,
    JOBS_CANCELLED,
    JOB_DURATION,
    TASK_WAIT_TIME,
)
GROUP_IN_SERVICE: Final = "GroupInServiceInstances"
GROUP_DESIRED: Final = "GroupDesiredCapacity"
# AWS/AutoScaling group metrics the fleet collects.
GROUP_METRICS: Final = (
    GROUP_DESIRED,
    GROUP_IN_SERVICE,
    "GroupPendingInstances",
    "GroupTerminatingInstances",
)


def metric(namespace: str, name: str, dimensions: dict[str, str]) -> dict[str, Any]:
    return {
        "Namespace": namespace,
        "MetricName": name,
        "Dimensions": [{"Name": key, "Value": value} for key, value in dimensions.items()],
    }


def stat(id_: str, metric_: dict[str, Any], statistic: str) -> dict[str, Any]:
    """One metric of a metric-math alarm (not returned itself)."""
    return {
        "Id": id_,
        "MetricStat": {"Metric": metric_, "Period": PERIOD_S, "Stat": statistic},
        "ReturnData": False,
    }


def expression(id_: str, text: str, label: str, *, returned: bool = False) -> dict[str, Any]:
    return {"Id": id_, "Expression": text, "Label": label, "ReturnData": returned}
