"""Workflow schedules: expressions checked as EventBridge Scheduler checks them (no AWS), run
times in a time zone across daylight saving changes, `workflow put` keeping the schedule in
step with the config, the emulator firing due schedules (a real `at(...)` a few seconds ahead,
cron through the runner with a chosen clock, failures to the dead-letter queue), and
`workflow list`."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cloud import iam, schedule_expressions
from cloud.aws import Account
from cloud.cli import main as cloud_main
from cloud.emulator.envfile import REGION
from cloud.emulator.scheduler import ScheduleRunner
from cloud.names import StackNames
from cloud.workflow_schedules import START_EXECUTION_TARGET, execution_name_template

UTC = dt.UTC
ACCOUNT = Account(partition="aws", region="us-east-1", account_id="123456789012")
EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,43}-[0-9a-f-]{36}$")


T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    """`predicate()` once it is truthy; each try is a few API calls, so four a second."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.25)
    return value


def at(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=UTC)


# -- expressions, without AWS --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("cron(0 2 * * * *)", "One must be a question mark"),
        ("cron(0 2 * * ?)", "6 required, 5 provided"),
        ("cron(60 2 * * ? *)", "Invalid minute value '60'"),
        ("cron(0 2 ? * 8 *)", "Invalid day-of-week value '8'"),
        ("cron(0 0 31 2 ? *)", "matches no date"),
        ("rate(0 minutes)", "positive integer"),
        ("rate(1 hours)", "singular (hour)"),
        ("rate(5 minute)", "plural (minutes)"),
        ("rate(5 weeks)", "minute(s), hour(s) or day(s)"),
        ("at(2026-02-30T10:00:00)", "not a date and time"),
        ("at(2026-12-24 18:00)", "at(yyyy-mm-ddThh:mm:ss)"),
        ("0 2 * * ? *", "is not at(yyyy-mm-ddThh:mm:ss), rate(value unit) or cron"),
    ],
)
def test_expressions_the_service_refuses_are_refused_with_the_reason(
    text: str, reason: str
) -> None:
    with pytest.raises(schedule_expressions.ExpressionError) as caught:
        schedule_expressions.parse(text)
    assert reason in str(caught.value)


def test_cron_runs_in_its_time_zone_across_daylight_saving_changes() -> None:
    nightly = schedule_expressions.parse("cron(30 2 * * ? *)")
    spring = schedule_expressions.runs_between(
        nightly, "Europe/Berlin", at(dt.datetime(2027, 3, 26)), at(dt.datetime(2027, 3, 30))
    )
    # 02:30 does not exist on 28 March 2027 in Berlin: that run is skipped.
    assert list(spring) == [
        at(dt.datetime(2027, 3, 26, 1, 30)),  # CET, UTC+1
        at(dt.datetime(2027, 3, 27, 1, 30)),
        at(dt.datetime(2027, 3, 29, 0, 30)),  # CEST, UTC+2
    ]
    autumn = schedule_expressions.runs_between(
        nightly, "Europe/Berlin", at(dt.datetime(2026, 10, 24)), at(dt.datetime(2026, 10, 27))
    )
    # 02:30 happens twice on 25 October 2026: it runs once, at the first.
    assert list(autumn) == [
        at(dt.datetime(2026, 10, 24, 0, 30)),
        at(dt.datetime(2026, 10, 25, 0, 30)),
        at(dt.datetime(2026, 10, 26, 1, 30)),
    ]


def test_aws_cron_features_and_rate_and_at() -> None:
    after = at(dt.datetime(2026, 11, 28, 21, 30))
    cases = {
        "cron(0 18 ? * MON-FRI *)": at(dt.datetime(2026, 11, 30, 18, 0)),
        "cron(0 0 L * ? *)": at(dt.datetime(2026, 11, 30, 0, 0)),
        "cron(0 10 ? * 2#1 *)": at(dt.datetime(2026, 12, 7, 10, 0)),  # first Monday
        "cron(0 0 ? * 6L *)": at(dt.datetime(2026, 12, 25, 0, 0)),  # last Friday
        "cron(0 0 29 2 ? *)": at(dt.datetime(2028, 2, 29, 0, 0)),
        "cron(0/15 * * * ? *)": at(dt.datetime(2026, 11, 28, 21, 45)),
        "at(2026-12-24T18:00:00)": at(dt.datetime(2026, 12, 24, 18, 0)),
    }
    for text, expected in cases.items():
        expression = schedule_expressions.parse(text)
        assert schedule_expressions.next_run(expression, "UTC", after) == expected, text
    past = schedule_expressions.parse("at(2026-01-01T00:00:00)")
    assert schedule_expressions.next_run(past, "UTC", after) is None
    hourly = schedule_expressions.parse("rate(1 hour)")
    start = after - dt.timedelta(minutes=90)
    runs = schedule_expressions.runs_between(
        hourly, "UTC", after, after + dt.timedelta(hours=2), start=start
    )
    assert list(runs) == [start + dt.timedelta(hours=2), start + dt.timedelta(hours=3)]


def workflow(workflow_id: str, schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "workflow_id": workflow_id,
        "workflow_stages": [
            {"execution_flag": "y", "execution_type": "sequential", "scripts": ["a.sh"]}
        ],
    }
    if schedule is not None:
        data["schedule"] = schedule
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / f"{data['workflow_id']}.json"
    path.write_text(json.dumps(data))
    return path


def test_validate_refuses_a_bad_schedule_with_the_reason_and_shows_a_good_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, workflow("nightly", {"expression": "cron(0 2 * * * *)"}))
    assert cloud_main(["workflow", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"rsql-cloud: {bad}: schedule.expression: 'cron(0 2 * * * *)': Invalid combination of "
        "day-of-month '*' and day-of-week '*'. One must be a question mark (?)"
    ]
    zone = write(tmp_path, workflow("nightly", {"expression": "rate(1 day)", "timezone": "X/Y"}))
    assert cloud_main(["workflow", "validate", str(zone)]) == 1
    assert "schedule.timezone: unknown time zone 'X/Y'" in capsys.readouterr().err
    good = write(
        tmp_path,
        workflow("nightly", {"expression": "cron(0 2 * * ? *)", "timezone": "Europe/Berlin"}),
    )
    assert cloud_main(["workflow", "validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"schedule: cron\(0 2 \* \* \? \*\) in Europe/Berlin, next run \S+Z", out)


def test_the_scheduler_role_may_only_start_the_machine_and_write_the_dead_letter_queue() -> None:
    names = StackNames("rsql")
    policy = iam.scheduler_policy(names, ACCOUNT)
    assert [(s["Action"], s["Resource"]) for s in policy["Statement"]] == [
        (
            ["states:StartExecution"],
            ["arn:aws:states:us-east-1:123456789012:stateMachine:rsql-workflow"],
        ),
        (["sqs:SendMessage"], ["arn:aws:sqs:us-east-1:123456789012:rsql-schedule-dlq"]),
    ]
    (trust,) = iam.trust_policy(iam.SCHEDULER_PRINCIPAL, ACCOUNT)["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_execution_names_fit_step_functions_and_stay_unique_per_invocation() -> None:
    long_id = "w" * 64
    template = execution_name_template(long_id)
    filled = template.replace("<aws.scheduler.execution-id>", str(uuid.uuid4()))
    assert len(filled) == 80 and EXECUTION_NAME.match(filled)
    assert execution_name_template("a.b") == "a_b-<aws.scheduler.execution-id>"


# -- against the emulator ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def names(emulator: Any) -> Iterator[StackNames]:
    stack = StackNames(f"sch{uuid.uuid4().hex[:8]}")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cloud_main(["deploy", "--stack-name", stack.stack_name]) == 0
    yield stack


def run(names: StackNames, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cloud_main([*args, "--stack-name", names.stack_name])
    return code, out.getvalue()


def schedule_of(aws: Any, names: StackNames, workflow_id: str) -> dict[str, Any] | None:
    try:
        return dict(
            aws.client("scheduler").get_schedule(Name=workflow_id, GroupName=names.schedule_group)
        )
    except aws.client("scheduler").exceptions.ResourceNotFoundException:
        return None


def executions_of(aws: Any, names: StackNames, workflow_id: str) -> list[dict[str, Any]]:
    arn = f"arn:aws:states:us-east-1:123456789012:stateMachine:{names.state_machine}"
    found = []
    for execution in aws.sfn.list_executions(stateMachineArn=arn)["executions"]:
        described = aws.sfn.describe_execution(executionArn=execution["executionArn"])
        if json.loads(described["input"]).get("workflow_id") == workflow_id:
            found.append(described)
    return found


def stop_all(aws: Any, executions: list[dict[str, Any]]) -> None:
    for execution in executions:
        aws.sfn.stop_execution(executionArn=execution["executionArn"])


def test_deploy_creates_the_scheduler_group_role_and_dead_letter_queue(
    names: StackNames, aws: Any
) -> None:
    group = aws.client("scheduler").get_schedule_group(Name=names.schedule_group)
    assert group["State"] == "ACTIVE"
    role = aws.iam.get_role(RoleName=names.scheduler_role)["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "scheduler.amazonaws.com"
    }
    policy = aws.iam.get_role_policy(
        RoleName=names.scheduler_role, PolicyName=iam.SCHEDULER_POLICY_NAME
    )["PolicyDocument"]
    assert policy == iam.scheduler_policy(names, ACCOUNT)
    url = aws.client("sqs").get_queue_url(QueueName=names.schedule_dlq)["QueueUrl"]
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["MessageRetentionPeriod"]
    )["Attributes"]
    assert attributes["MessageRetentionPeriod"] == str(14 * 24 * 3600)


def test_put_creates_updates_and_deletes_the_schedule(
    names: StackNames, aws: Any, tmp_path: Path
) -> None:
    workflow_id = f"nightly_{uuid.uuid4().hex[:6]}"
    nightly = {"expression": "cron(0 2 * * ? *)", "timezone": "Europe/Berlin"}
    path = write(tmp_path, workflow(workflow_id, nightly))
    code, out = run(names, "workflow", "put", str(path))
    assert code == 0
    assert f"Created schedule {workflow_id} cron(0 2 * * ? *) (Europe/Berlin)" in out
    schedule = schedule_of(aws, names, workflow_id)
    assert schedule is not None
    assert schedule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert schedule["State"] == "ENABLED"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = schedule["Target"]
    assert target["Arn"] == START_EXECUTION_TARGET
    assert target["RoleArn"] == f"arn:aws:iam::123456789012:role/{names.scheduler_role}"
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 5, "MaximumEventAgeInSeconds": 3600}
    assert target["DeadLetterConfig"] == {
        "Arn": f"arn:aws:sqs:us-east-1:123456789012:{names.schedule_dlq}"
    }
    request = json.loads(target["Input"])
    assert request == {
        "StateMachineArn": f"arn:aws:states:us-east-1:123456789012:stateMachine:"
        f"{names.state_machine}",
        "Name": f"{workflow_id}-<aws.scheduler.execution-id>",
        "Input": json.dumps({"workflow_id": workflow_id, "restart_of": ""}),
    }

    code, out = run(names, "workflow", "put", str(path))
    assert code == 0 and "schedule" not in out  # unchanged: no call

    write(tmp_path, workflow(workflow_id, {**nightly, "enabled": False}))
    code, out = run(names, "workflow", "put", str(path))
    assert f"Updated schedule {workflow_id}" in out
    assert (schedule_of(aws, names, workflow_id) or {})["State"] == "DISABLED"

    write(tmp_path, workflow(workflow_id))
    code, out = run(names, "workflow", "put", str(path))
    assert code == 0 and f"Deleted schedule {workflow_id} cron(0 2 * * ? *)" in out
    assert schedule_of(aws, names, workflow_id) is None


def test_put_of_a_schedule_the_service_would_refuse_is_one_line_and_changes_nothing(
    names: StackNames, aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflow_id = f"kept_{uuid.uuid4().hex[:6]}"

    def stored() -> tuple[dict[str, Any], dict[str, Any]]:
        schedule = schedule_of(aws, names, workflow_id) or {}
        schedule.pop("ResponseMetadata", None)
        key = {"workflow_id": {"S": workflow_id}}
        item = aws.ddb.get_item(TableName=names.config_table, Key=key, ConsistentRead=True)
        return schedule, item["Item"]

    nightly = {"expression": "cron(0 2 * * ? *)", "timezone": "Europe/Berlin"}
    path = write(tmp_path, workflow(workflow_id, nightly))
    assert run(names, "workflow", "put", str(path))[0] == 0
    before = stored()
    assert before[0]["ScheduleExpression"] == nightly["expression"]
    capsys.readouterr()
    try:
        for bad in (
            {"expression": "cron(0 3 * * * *)", "timezone": "Europe/Berlin"},
            {"expression": "cron(0 3 * * ? *)", "timezone": "Europe/Nowhere"},
        ):
            changed = workflow(workflow_id, bad)
            changed["workflow_stages"][0]["scripts"] = ["b.sh"]  # would change the item too
            write(tmp_path, changed)
            code, out = run(names, "workflow", "put", str(path))
            err = capsys.readouterr().err
            assert code == 1 and out == "", out
            assert err.count("\n") == 1 and err.startswith(f"rsql-cloud: {path}: schedule."), err
            assert stored() == before
    finally:
        # The group is shared by this module's tests: the runner's test fires every due one.
        write(tmp_path, workflow(workflow_id))
        assert run(names, "workflow", "put", str(path))[0] == 0


def test_the_emulator_refuses_what_scheduler_refuses(names: StackNames, aws: Any) -> None:
    scheduler = aws.client("scheduler")
    request = {
        "Name": f"bad{uuid.uuid4().hex[:6]}",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": {"Arn": START_EXECUTION_TARGET, "RoleArn": "arn:aws:iam::1:role/r"},
    }
    with pytest.raises(scheduler.exceptions.ValidationException):
        scheduler.create_schedule(
            **request, GroupName=names.schedule_group, ScheduleExpression="cron(0 2 * * * *)"
        )
    with pytest.raises(scheduler.exceptions.ResourceNotFoundException):
        scheduler.create_schedule(
            **request, GroupName="no-such-group", ScheduleExpression="rate(1 day)"
        )


def test_an_at_schedule_a_few_seconds_ahead_really_starts_a_run(
    names: StackNames, aws: Any, tmp_path: Path
) -> None:
    workflow_id = f"soon_{uuid.uuid4().hex[:6]}"
    # Far enough ahead that `workflow put` has created the schedule by then on a loaded
    # machine: a one-time schedule counts from its creation on, so one made late never fires.
    moment = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=10)
    soon = {"expression": f"at({moment:%Y-%m-%dT%H:%M:%S})", "timezone": "UTC"}
    path = write(tmp_path, workflow(workflow_id, soon))
    assert run(names, "workflow", "put", str(path))[0] == 0

    started = poll(lambda: executions_of(aws, names, workflow_id), 30, "the scheduled run")
    try:
        (execution,) = started
        assert EXECUTION_NAME.match(execution["name"]), execution["name"]
        assert execution["name"].startswith(f"{workflow_id}-")
        assert json.loads(execution["input"]) == {"workflow_id": workflow_id, "restart_of": ""}
        assert execution["startDate"] >= moment
        # The run is a real one: the state machine took the lock and wrote its audit row.
        row = poll(lambda: _audit_row(aws, names, execution["name"]), 20, "its audit row")
        assert row["execution_status"]["S"] == "Running"

        code, out = run(names, "workflow", "list")
        assert code == 0
        (line,) = [text for text in out.splitlines() if text.startswith(workflow_id)]
        assert line.split()[1:6] == [soon["expression"], "UTC", "ENABLED", "-", "Running"]
    finally:
        stop_all(aws, started)
    # Once only.
    assert len(executions_of(aws, names, workflow_id)) == 1


def _audit_row(aws: Any, names: StackNames, name: str) -> dict[str, Any] | None:
    answer = aws.ddb.query(
        TableName=names.workflow_audit_table,
        KeyConditionExpression="workflow_execution_id = :id",
        ExpressionAttributeValues={":id": {"S": name}},
    )
    return answer["Items"][0] if answer["Items"] else None


def test_the_runner_fires_cron_runs_as_they_fall_due(
    names: StackNames, aws: Any, tmp_path: Path
) -> None:
    workflow_id = f"cron_{uuid.uuid4().hex[:6]}"
    nightly = {"expression": "cron(0 2 * * ? *)", "timezone": "Europe/Berlin"}
    assert (
        run(names, "workflow", "put", str(write(tmp_path, workflow(workflow_id, nightly))))[0] == 0
    )
    runner = ScheduleRunner(aws.endpoint_url, REGION, group=names.schedule_group)
    now = dt.datetime.now(UTC)
    assert runner.tick(now) == []  # first look: nothing due yet
    expression = schedule_expressions.parse(nightly["expression"])
    first = schedule_expressions.next_run(expression, "Europe/Berlin", now)
    assert first is not None
    assert runner.tick(first - dt.timedelta(seconds=1)) == []
    (execution_id,) = runner.tick(first + dt.timedelta(seconds=1))
    assert runner.tick(first + dt.timedelta(seconds=2)) == []  # due once, fired once
    started = executions_of(aws, names, workflow_id)
    try:
        assert [e["name"] for e in started] == [f"{workflow_id}-{execution_id}"]
    finally:
        stop_all(aws, started)


def test_a_start_that_fails_goes_to_the_dead_letter_queue(names: StackNames, aws: Any) -> None:
    scheduler = aws.client("scheduler")
    name = f"orphan{uuid.uuid4().hex[:6]}"
    missing_machine = "arn:aws:states:us-east-1:123456789012:stateMachine:no-such-machine"
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:{names.schedule_dlq}"
    scheduler.create_schedule(
        Name=name,
        GroupName=names.schedule_group,
        ScheduleExpression="rate(1 minute)",
        FlexibleTimeWindow={"Mode": "OFF"},
        State="DISABLED",  # the emulator's own runner leaves it alone
        Target={
            "Arn": START_EXECUTION_TARGET,
            "RoleArn": "arn:aws:iam::123456789012:role/r",
            "Input": json.dumps({"StateMachineArn": missing_machine, "Input": "{}"}),
            "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 60},
            "DeadLetterConfig": {"Arn": queue_arn},
        },
    )
    runner = ScheduleRunner(aws.endpoint_url, REGION, group=names.schedule_group)
    schedule = scheduler.get_schedule(Name=name, GroupName=names.schedule_group)
    schedule["State"] = "ENABLED"
    runner._schedules = lambda: [schedule]  # type: ignore[method-assign]
    created = schedule["CreationDate"]
    (execution_id,) = runner.tick(created + dt.timedelta(seconds=61))
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName=names.schedule_dlq)["QueueUrl"]
    messages = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=1
    ).get("Messages", [])
    (message,) = [
        m for m in messages if m["MessageAttributes"]["EXECUTION_ID"]["StringValue"] == execution_id
    ]
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes["ERROR_CODE"] == "StateMachineDoesNotExist"
    assert attributes["SCHEDULE_ARN"] == schedule["Arn"]
    assert json.loads(message["Body"])["StateMachineArn"] == missing_machine


def test_list_shows_every_workflow_with_schedule_next_run_and_last_run(
    names: StackNames, aws: Any, tmp_path: Path
) -> None:
    plain, nightly = f"plain_{uuid.uuid4().hex[:6]}", f"night_{uuid.uuid4().hex[:6]}"
    schedule = {"expression": "cron(0 2 * * ? *)", "timezone": "Europe/Berlin"}
    for data in (workflow(plain), workflow(nightly, schedule)):
        assert run(names, "workflow", "put", str(write(tmp_path, data)))[0] == 0
    code, out = run(names, "workflow", "list", "--json")
    assert code == 0
    listed = {line["workflow_id"]: line for line in json.loads(out)}
    assert listed[plain]["schedule"] is None and listed[plain]["next_run"] is None
    assert listed[plain]["last_status"] is None
    expected = schedule_expressions.next_run(
        schedule_expressions.parse("cron(0 2 * * ? *)"), "Europe/Berlin", dt.datetime.now(UTC)
    )
    assert expected is not None
    assert listed[nightly]["next_run"] == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert listed[nightly]["state"] == "ENABLED"
    assert listed[nightly]["timezone"] == "Europe/Berlin"

    # A run starts: list shows it as the last run, with its status and start time.
    code, out = run(names, "workflow", "start", plain)
    assert code == 0
    name = out.split()[2]
    try:
        row = poll(lambda: _audit_row(aws, names, name), 20, "the audit row")
        listed = {
            line["workflow_id"]: line
            for line in json.loads(run(names, "workflow", "list", "--json")[1])
        }
        assert listed[plain]["last_execution_id"] == name
        assert listed[plain]["last_status"] == "Running"
        assert listed[plain]["last_start"] == row["execution_start_ts"]["S"]
    finally:
        aws.sfn.stop_execution(
            executionArn=f"arn:aws:states:us-east-1:123456789012:execution:"
            f"{names.state_machine}:{name}"
        )
