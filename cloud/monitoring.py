"""What `rsql-cloud deploy --alarms EMAIL_OR_TOPIC` adds: three alarms, a dashboard, and the
topic they notify (docs/metrics.md lists every metric and alarm).

- `<stack>-workflow-failed`: a run ended FAILED or TIMED_OUT in the last minute (AWS/States
  ExecutionsFailed + ExecutionsTimedOut of the state machine).
- `<stack>-tasks-waiting`: a task waited longer than N minutes (default 15) before a host took
  it (AWS/States ActivityScheduleTime, Maximum, of the activity).
- `<stack>-no-agent-polling`: for 10 minutes no agent polled although work was scheduled or
  hosts were in service, or nothing reported at all (RSQL/Agent Polling, AWS/States
  ActivitiesScheduled, AWS/AutoScaling GroupInServiceInstances).

The last one treats missing data as breaching: a fleet with no agent publishes nothing, and that
is exactly the failure. A fleet that scaled to zero on purpose reports 0 hosts in service (its
group metrics are on), so it stays quiet until work is scheduled; hosts run without a fleet
group (your own) are expected to poll always.

An e-mail target gets a topic of the stack (`<stack>-alarms`) with the address subscribed (SNS
mails a confirmation link); a topic ARN is notified directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from cloud import metrics as m
from cloud.aws import CloudError
from cloud.resources import Resource, Topic
from cloud.resources_monitoring import Alarm, Dashboard, EmailSubscription

if TYPE_CHECKING:
    from cloud.deploy import DesiredStack

DEFAULT_WAIT_ALARM_MINUTES: Final = 15
NO_AGENT_MINUTES: Final = 10
_TOPIC_ARN_RE: Final = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
_EMAIL_RE: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Alarming:
    """Where alarms go (an e-mail address or an SNS topic ARN) and the waiting threshold."""

    target: str
    wait_minutes: int = DEFAULT_WAIT_ALARM_MINUTES

    @classmethod
    def parse(cls, target: str, wait_minutes: int = DEFAULT_WAIT_ALARM_MINUTES) -> Alarming:
        if not (_TOPIC_ARN_RE.match(target) or _EMAIL_RE.match(target)):
            raise CloudError(
                f"--alarms: {target!r} is neither an e-mail address nor an SNS topic ARN "
                "(arn:aws:sns:REGION:ACCOUNT:NAME)"
            )
        if wait_minutes < 1:
            raise CloudError(f"--wait-alarm-minutes: must be at least 1, got {wait_minutes}")
        return cls(target, wait_minutes)

    @classmethod
    def everything(cls) -> Alarming:
        """Settings under which every monitoring resource is listed (for destroy)."""
        return cls("alarms@destroy.invalid")

    @property
    def email(self) -> str | None:
        return None if self.target.startswith("arn:") else self.target


def monitoring_resources(stack: DesiredStack, alarming: Alarming) -> list[Resource]:
    """The alarm topic (for an e-mail target), its subscription, the alarms, the dashboard."""
    names = stack.names
    resources: list[Resource] = []
    if alarming.email is not None:
        topic = Topic(stack, names.alarm_topic)
        resources += [topic, EmailSubscription(stack, alarming.email, topic.arn)]
        topic_arn = topic.arn
    else:
        topic_arn = alarming.target
    for name, spec in alarm_specs(stack, alarming.wait_minutes).items():
        spec["AlarmActions"] = [topic_arn]
        if name.endswith("no-agent-polling"):
            spec["OKActions"] = [topic_arn]  # "agents are back" is news too
        resources.append(Alarm(stack, name, spec))
    resources.append(Dashboard(stack, names.dashboard, dashboard_body(stack)))
    return resources


def alarm_specs(stack: DesiredStack, wait_minutes: int) -> dict[str, dict[str, Any]]:
    """PutMetricAlarm parameters of each alarm (besides name, actions and tags)."""
    names = stack.names
    return {
        names.alarm("workflow-failed"): _workflow_failed(stack),
        names.alarm("tasks-waiting"): _tasks_waiting(stack, wait_minutes),
        names.alarm("no-agent-polling"): _no_agent_polling(stack),
    }


_EVERY_MINUTE: Final = {
    "EvaluationPeriods": 1,
    "DatapointsToAlarm": 1,
    "ComparisonOperator": "GreaterThanOrEqualToThreshold",
    "TreatMissingData": "notBreaching",
}


def _workflow_failed(stack: DesiredStack) -> dict[str, Any]:
    machine = {"StateMachineArn": stack.state_machine_arn}
    failed = m.metric(m.STATES_NAMESPACE, m.EXECUTIONS_FAILED, machine)
    timed_out = m.metric(m.STATES_NAMESPACE, m.EXECUTIONS_TIMED_OUT, machine)
    return {
        "AlarmDescription": (
            f"A run of a workflow on {stack.names.state_machine} failed or timed out"
        ),
        "Metrics": [
            m.stat("failed", failed, "Sum"),
            m.stat("timedout", timed_out, "Sum"),
            m.expression(
                "ended", "FILL(failed, 0) + FILL(timedout, 0)", "runs failed", returned=True
            ),
        ],
        "Threshold": 1.0,
        **_EVERY_MINUTE,
    }


def _tasks_waiting(stack: DesiredStack, wait_minutes: int) -> dict[str, Any]:
    activity = {"ActivityArn": stack.activity_arn}
    return {
        "AlarmDescription": (
            f"A job waited more than {wait_minutes} minutes for a host ({stack.names.activity})"
        ),
        **m.metric(m.STATES_NAMESPACE, m.ACTIVITY_SCHEDULE_TIME, activity),
        "Statistic": "Maximum",
        "Period": m.PERIOD_S,
        "Threshold": float(wait_minutes * 60_000),
        **_EVERY_MINUTE,
    }


def _no_agent_polling(stack: DesiredStack) -> dict[str, Any]:
    names = stack.names
    polling = m.metric(m.AGENT_NAMESPACE, m.POLLING, {m.ACTIVITY_DIMENSION: names.activity})
    scheduled = m.metric(
        m.STATES_NAMESPACE, m.ACTIVITIES_SCHEDULED, {"ActivityArn": stack.activity_arn}
    )
    hosts = m.metric(
        m.AUTOSCALING_NAMESPACE,
        m.GROUP_IN_SERVICE,
        {"AutoScalingGroupName": names.autoscaling_group},
    )
    return {
        "AlarmDescription": (
            f"No agent has polled {names.activity} for {NO_AGENT_MINUTES} minutes while work "
            "was scheduled or hosts were in service (or nothing reports at all)"
        ),
        "Metrics": [
            m.stat("polling", polling, "Sum"),
            m.stat("scheduled", scheduled, "Sum"),
            m.stat("hosts", hosts, "Maximum"),
            m.expression(
                "silent",
                "IF(FILL(polling, 0) < 1 AND (FILL(scheduled, 0) + FILL(hosts, 0)) > 0, 1, 0)",
                "no agent polling",
                returned=True,
            ),
        ],
        "Threshold": 1.0,
        "EvaluationPeriods": NO_AGENT_MINUTES,
        "DatapointsToAlarm": NO_AGENT_MINUTES,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "breaching",
    }


def dashboard_body(stack: DesiredStack) -> dict[str, Any]:
    """Runs, jobs, waiting, the fleet, jobs on the hosts and their duration (a graph each, two
    to a row), and the alarms."""
    names = stack.names
    machine = ["StateMachineArn", stack.state_machine_arn]
    activity = ["ActivityArn", stack.activity_arn]
    fleet = [m.ACTIVITY_DIMENSION, names.activity]
    group = ["AutoScalingGroupName", names.autoscaling_group]
    states, agent, scaling = m.STATES_NAMESPACE, m.AGENT_NAMESPACE, m.AUTOSCALING_NAMESPACE
    maximum, p50, p90 = {"stat": "Maximum"}, {"stat": "p50"}, {"stat": "p90"}
    graphs: list[tuple[str, str, list[list[Any]]]] = [
        ("Workflow runs", "Sum", [[states, n, *machine] for n in _RUN_METRICS]),
        ("Jobs (activity tasks)", "Sum", [[states, n, *activity] for n in _TASK_METRICS]),
        (
            "Time a job waited for a host (ms)",
            "Maximum",
            [
                [states, m.ACTIVITY_SCHEDULE_TIME, *activity, maximum],
                [agent, m.TASK_WAIT_TIME, *fleet, p90],
            ],
        ),
        (
            "Fleet: slots, busy slots, agents polling, hosts",
            "Sum",
            [
                *([agent, n, *fleet] for n in (m.SLOTS, m.SLOTS_BUSY, m.POLLING)),
                [scaling, m.GROUP_IN_SERVICE, *group, maximum],
                [scaling, m.GROUP_DESIRED, *group, maximum],
            ],
        ),
        ("Jobs on the hosts", "Sum", [[agent, n, *fleet] for n in _JOB_METRICS]),
        (
            "Job duration (ms)",
            "p50",
            [[agent, m.JOB_DURATION, *fleet, stat] for stat in (p50, p90, maximum)],
        ),
    ]
    widgets = [
        _graph(stack.account.region, title, stat, series, 12 * (i % 2), 6 * (i // 2))
        for i, (title, stat, series) in enumerate(graphs)
    ]
    alarms = [
        stack.account.arn("cloudwatch", f"alarm:{name}")
        for name in alarm_specs(stack, DEFAULT_WAIT_ALARM_MINUTES)
    ]
    widgets.append(
        {
            "type": "alarm",
            "x": 0,
            "y": 6 * ((len(graphs) + 1) // 2),
            "width": 24,
            "height": 3,
            "properties": {"title": "Alarms", "alarms": alarms},
        }
    )
    return {"widgets": widgets}


_RUN_METRICS: Final = (
    m.EXECUTIONS_STARTED,
    m.EXECUTIONS_SUCCEEDED,
    m.EXECUTIONS_FAILED,
    m.EXECUTIONS_TIMED_OUT,
    m.EXECUTIONS_ABORTED,
)
_TASK_METRICS: Final = (
    m.ACTIVITIES_SCHEDULED,
    m.ACTIVITIES_STARTED,
    m.ACTIVITIES_SUCCEEDED,
    m.ACTIVITIES_FAILED,
    m.ACTIVITIES_TIMED_OUT,
    m.ACTIVITIES_HEARTBEAT_TIMED_OUT,
)
_JOB_METRICS: Final = (
    m.JOBS_STARTED,
    m.JOBS_COMPLETED,
    m.JOBS_FAILED,
    m.JOBS_TIMED_OUT,
    m.JOBS_CANCELLED,
)


def _graph(
    region: str, title: str, stat: str, series: list[list[Any]], x: int, y: int
) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": 12,
        "height": 6,
        "properties": {
            "title": title,
            "region": region,
            "stat": stat,
            "period": m.PERIOD_S,
            "view": "timeSeries",
            "metrics": series,
        },
    }
