"""`rsql-cloud deploy --alarms`: the alarms, their topic and e-mail subscription, and the
dashboard, created on the emulator with the settings docs/metrics.md describes; a second run
changes nothing, a run without --alarms leaves them, destroy removes them."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from typing import Any

import pytest

from cloud.cli import main as cloud_main
from cloud.names import StackNames


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cloud_main(list(argv))
    return code, out.getvalue(), err.getvalue()


def alarms_of(aws: Any, names: StackNames) -> dict[str, dict[str, Any]]:
    wanted = [names.alarm(a) for a in ("workflow-failed", "tasks-waiting", "no-agent-polling")]
    answer = aws.client("cloudwatch").describe_alarms(AlarmNames=wanted)
    return {a["AlarmName"]: a for a in answer["MetricAlarms"]}


def test_bad_targets_are_one_line_and_change_nothing(emulator: Any) -> None:
    stack = f"mon{uuid.uuid4().hex[:8]}"
    for target in ("not-an-address", "arn:aws:sqs:us-east-1:123456789012:q"):
        code, out, err = run("deploy", "--stack-name", stack, "--alarms", target)
        assert code == 1 and out == ""
        assert (
            err.startswith(f"rsql-cloud: --alarms: {target!r} is neither") and err.count("\n") == 1
        )
    code, _, err = run(
        "deploy", "--stack-name", stack, "--alarms", "a@b.example", "--wait-alarm-minutes", "0"
    )
    assert code == 1 and "--wait-alarm-minutes: must be at least 1" in err
    assert run("destroy", "--stack-name", stack, "--yes")[1].startswith("Nothing to delete")


def test_alarms_dashboard_and_subscription(emulator: Any, aws: Any) -> None:
    names = StackNames(f"mon{uuid.uuid4().hex[:8]}")
    stack = ("--stack-name", names.stack_name)
    code, out, err = run(
        "deploy", *stack, "--alarms", "ops@example.com", "--wait-alarm-minutes", "20"
    )
    assert code == 0, err
    for line in (
        f"Creating SNS topic: {names.alarm_topic}",
        f"Subscribing to {names.alarm_topic} (confirm by e-mail): ops@example.com",
        f"Creating CloudWatch alarm: {names.alarm('workflow-failed')}",
        f"Creating CloudWatch alarm: {names.alarm('tasks-waiting')}",
        f"Creating CloudWatch alarm: {names.alarm('no-agent-polling')}",
        f"Creating CloudWatch dashboard: {names.dashboard}",
    ):
        assert line in out
    topic = f"arn:aws:sns:us-east-1:123456789012:{names.alarm_topic}"
    (subscription,) = aws.sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("email", "ops@example.com")

    alarms = alarms_of(aws, names)
    failed = alarms[names.alarm("workflow-failed")]
    assert failed["AlarmActions"] == [topic]
    assert failed["TreatMissingData"] == "notBreaching"
    metric = {q["Id"]: q for q in failed["Metrics"]}["failed"]["MetricStat"]["Metric"]
    assert (metric["Namespace"], metric["MetricName"]) == ("AWS/States", "ExecutionsFailed")
    assert metric["Dimensions"] == [
        {
            "Name": "StateMachineArn",
            "Value": f"arn:aws:states:us-east-1:123456789012:stateMachine:{names.state_machine}",
        }
    ]
    waiting = alarms[names.alarm("tasks-waiting")]
    assert (waiting["MetricName"], waiting["Statistic"]) == ("ActivityScheduleTime", "Maximum")
    assert waiting["Threshold"] == 20 * 60_000
    silent = alarms[names.alarm("no-agent-polling")]
    assert silent["TreatMissingData"] == "breaching"
    assert (silent["EvaluationPeriods"], silent["DatapointsToAlarm"]) == (10, 10)
    assert silent["OKActions"] == [topic]
    queries = {q["Id"]: q for q in silent["Metrics"]}
    polling = queries["polling"]["MetricStat"]["Metric"]
    assert (polling["Namespace"], polling["MetricName"]) == ("RSQL/Agent", "Polling")
    assert polling["Dimensions"] == [{"Name": "Activity", "Value": names.activity}]
    assert queries["silent"]["ReturnData"] is True

    body = json.loads(
        aws.client("cloudwatch").get_dashboard(DashboardName=names.dashboard)["DashboardBody"]
    )
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert titles[0] == "Workflow runs" and titles[-1] == "Alarms"
    assert len(body["widgets"]) == 7

    # Again: nothing to do. Without --alarms: left as they are.
    code, out, _ = run(
        "deploy", *stack, "--alarms", "ops@example.com", "--wait-alarm-minutes", "20"
    )
    assert code == 0 and f"No changes: stack {names.stack_name} is up to date." in out
    code, out, _ = run("deploy", *stack)
    assert code == 0 and "No changes" in out
    assert len(alarms_of(aws, names)) == 3

    # A topic of your own instead: the alarms point at it.
    other = aws.sns.create_topic(Name=f"ops-{uuid.uuid4().hex[:6]}")["TopicArn"]
    code, out, _ = run("deploy", *stack, "--alarms", other, "--wait-alarm-minutes", "20")
    assert code == 0 and out.count("Updating CloudWatch alarm") == 3
    assert {a["AlarmActions"][0] for a in alarms_of(aws, names).values()} == {other}

    code, out, err = run("destroy", *stack, "--purge", "--yes")
    assert code == 0, err
    assert alarms_of(aws, names) == {}
    with pytest.raises(aws.client("cloudwatch").exceptions.ResourceNotFound):
        aws.client("cloudwatch").get_dashboard(DashboardName=names.dashboard)
    assert topic not in [t["TopicArn"] for t in aws.sns.list_topics()["Topics"]]
