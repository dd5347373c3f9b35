"""How the fleet grows and shrinks: two step scaling policies, each driven by one alarm.

Scale out, `<stack>-agents-scale-out`: work is waiting. Read from Step Functions' own
per-activity metrics, because only the service sees a task nobody has taken, and with zero
hosts no agent publishes anything (scale from zero needs a signal that exists at zero):

    waiting = MAX(ActivitiesScheduled - ActivitiesStarted,          (this minute's tasks no host
                                                                      took within the minute)
                  IF(ActivityScheduleTime >= 60 s, 1, 0))           (a task was taken late: the
                                                                      fleet is full)

  alarm when waiting >= 1 for one minute; add 1 host for up to one host's worth of waiting
  tasks (`concurrency` slots), 2 up to twice that, 4 up to four times, 8 beyond (never past
  the group's maximum). New hosts count as warming up for 5 minutes (boot and install), so the
  alarm staying in ALARM meanwhile does not add hosts for the same tasks again.

Scale in, `<stack>-agents-scale-in`: a whole host's worth of slots has been idle for 15
minutes and no task waited. Read from the agents' own numbers (agent/metrics.py, docs/
metrics.md), summed over the fleet:

    idle = IF(ActivitiesScheduled - ActivitiesStarted > 0, 0, Slots - SlotsBusy)

  alarm when idle >= `concurrency` in each of 15 one-minute periods; remove 1 host. Each
  removal needs fresh 15 idle minutes that still show a spare host, so the fleet shrinks one
  host at a time, down to its minimum (0 lets it sleep between nightly runs). Auto Scaling
  picks the host; the termination hook makes its agent drain first, so a busy host finishes
  its jobs before it goes (README, "Drain a host"). No data (no hosts) is not
  idle: nothing to remove.
"""

from __future__ import annotations

from typing import Any, Final

from cloud import metrics as m

SCALE_OUT_WARMUP_S: Final = 300
LATE_START_MS: Final = 60_000
IDLE_MINUTES: Final = 15


def scale_out_policy(concurrency: int) -> dict[str, Any]:
    """PutScalingPolicy settings (bounds are relative to the alarm's threshold of 1)."""
    c = concurrency
    return {
        "AdjustmentType": "ChangeInCapacity",
        "MetricAggregationType": "Maximum",
        "EstimatedInstanceWarmup": SCALE_OUT_WARMUP_S,
        "StepAdjustments": [
            {
                "MetricIntervalLowerBound": 0.0,
                "MetricIntervalUpperBound": float(c),
                "ScalingAdjustment": 1,
            },
            {
                "MetricIntervalLowerBound": float(c),
                "MetricIntervalUpperBound": float(2 * c),
                "ScalingAdjustment": 2,
            },
            {
                "MetricIntervalLowerBound": float(2 * c),
                "MetricIntervalUpperBound": float(4 * c),
                "ScalingAdjustment": 4,
            },
            {"MetricIntervalLowerBound": float(4 * c), "ScalingAdjustment": 8},
        ],
    }


def _step(lower: int, upper: int | None, hosts: int) -> dict[str, Any]:
    step: dict[str, Any] = {"MetricIntervalLowerBound": float(lower), "ScalingAdjustment": hosts}
    if upper is not None:
        step["MetricIntervalUpperBound"] = float(upper)
    return step


def scale_in_policy() -> dict[str, Any]:
    return {
        "AdjustmentType": "ChangeInCapacity",
        "MetricAggregationType": "Average",
        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": -1}],
    }


def _task_counts(activity_arn: str) -> list[dict[str, Any]]:
    activity = {"ActivityArn": activity_arn}
    scheduled = m.metric(m.STATES_NAMESPACE, m.ACTIVITIES_SCHEDULED, activity)
    started = m.metric(m.STATES_NAMESPACE, m.ACTIVITIES_STARTED, activity)
    return [m.stat("scheduled", scheduled, "Sum"), m.stat("started", started, "Sum")]


def scale_out_alarm(activity_arn: str) -> dict[str, Any]:
    """PutMetricAlarm settings besides name, actions and tags."""
    late = m.metric(m.STATES_NAMESPACE, m.ACTIVITY_SCHEDULE_TIME, {"ActivityArn": activity_arn})
    return {
        "AlarmDescription": "Jobs wait for a host: add hosts (rsql-cloud fleet)",
        "Metrics": [
            *_task_counts(activity_arn),
            m.stat("late", late, "Maximum"),
            m.expression("untaken", "FILL(scheduled, 0) - FILL(started, 0)", "tasks not taken"),
            m.expression("full", f"IF(FILL(late, 0) >= {LATE_START_MS}, 1, 0)", "taken late"),
            m.expression("waiting", "MAX([untaken, full])", "tasks waiting", returned=True),
        ],
        "Threshold": 1.0,
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching",
    }


def scale_in_alarm(activity_arn: str, activity_name: str, concurrency: int) -> dict[str, Any]:
    fleet = {m.ACTIVITY_DIMENSION: activity_name}
    return {
        "AlarmDescription": (
            f"A host's worth of slots ({concurrency}) idle for {IDLE_MINUTES} minutes: remove a "
            "host (it drains first)"
        ),
        "Metrics": [
            *_task_counts(activity_arn),
            m.stat("slots", m.metric(m.AGENT_NAMESPACE, m.SLOTS, fleet), "Sum"),
            m.stat("busy", m.metric(m.AGENT_NAMESPACE, m.SLOTS_BUSY, fleet), "Sum"),
            m.expression(
                "idle",
                "IF(FILL(scheduled, 0) - FILL(started, 0) > 0, 0, slots - FILL(busy, 0))",
                "idle slots",
                returned=True,
            ),
        ],
        "Threshold": float(concurrency),
        "EvaluationPeriods": IDLE_MINUTES,
        "DatapointsToAlarm": IDLE_MINUTES,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching",
    }
