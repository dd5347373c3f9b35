"""The agent against the emulator: one job at a time, from poll to completion, with the
audit row, the CloudWatch stream and the local log checked."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    INSTANCE_ID,
    Stack,
    agent_settings,
    agent_thread,
    audit_row,
    failure_of,
    finished,
    log_lines,
    log_messages,
    make_stack,
    process_gone,
    start,
    task_input,
    write_script,
)

from agent import logs
from agent.app import StartupError, running

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

pytestmark = pytest.mark.usefixtures("emulator")


@pytest.fixture
def stack(aws: Any, uid: str) -> Stack:
    return make_stack(aws, uid)


def test_happy_path(aws: Any, uid: str, stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    settings = agent_settings(tmp_path, stack)
    write_script(
        settings.script_dir,
        "hello.sh",
        """
        echo "hello from $RSQL_JOB_NAME of $RSQL_WORKFLOW_ID/$RSQL_WORKFLOW_EXECUTION_ID"
        echo "args: $*"
        echo "a warning" >&2
        env > "$1/env"
        cp "$2"/*.task.json "$1/journal.json"
        for i in 1 2 3; do echo "line $i"; done
        """,
    )
    captured = io.StringIO()
    logs.configure(stream=captured)
    try:
        with agent_thread(settings) as agent:
            arn = start(
                aws,
                stack,
                task_input(uid, "hello.sh", args=[str(out), str(settings.state_dir), "x y"]),
                f"exec-{uid}",
            )
            execution = finished(aws, arn)
            assert agent.jobs_started == 1
    finally:
        logs.configure()
    assert execution["status"] == "SUCCEEDED", failure_of(aws, arn)

    stream = f"wf-{uid}/exec-{uid}/hello.sh"
    output = json.loads(execution["output"])
    assert output["job_name"] == "hello.sh" and output["status"] == "Completed"
    assert output["exit_code"] == 0 and output["log_stream"] == stream
    assert output["instance_id"] == INSTANCE_ID and output["duration_ms"] >= 0

    row = audit_row(aws, stack, "hello.sh", f"exec-{uid}")
    assert row["execution_status"] == "Completed"
    assert row["workflow_id"] == f"wf-{uid}" and row["stage_index"] == 0
    assert row["exit_code"] == 0 and row["attempt"] == 1 and row["log_stream"] == stream
    assert row["instance_id"] == INSTANCE_ID and row["worker_name"] == "test-worker"
    assert ISO.match(row["execution_start_ts"]) and ISO.match(row["execution_end_ts"])
    assert row["execution_start_ts"] <= row["execution_end_ts"]
    assert row["duration_ms"] == output["duration_ms"]
    assert "error" not in row and "cause" not in row

    expected = [
        f"hello from hello.sh of wf-{uid}/exec-{uid}",
        f"args: {out} {settings.state_dir} x y",
        "a warning",
        "line 1",
        "line 2",
        "line 3",
    ]
    assert sorted(log_messages(aws, stack, stream)) == sorted(expected)
    local = settings.log_dir / f"wf-{uid}" / f"exec-{uid}" / "hello.sh.log"
    assert sorted(t for _, _, t in log_lines(local)) == sorted(expected)

    # The secret's connection reached the script ...
    secret = json.loads(aws.secrets.get_secret_value(SecretId="rsql/redshift")["SecretString"])
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines() if "=" in line)
    assert env["PGPASSWORD"] == env["RSPASSWORD"] == secret["password"]
    assert env["PGHOST"] == env["RSQL_HOST"] == secret["host"]
    assert env["PGPORT"] == env["RSQL_PORT"] == str(secret["port"])
    assert env["PGUSER"] == env["RSQL_USER"] == secret["username"]
    assert env["PGDATABASE"] == env["RSQL_DB"] == secret["dbname"]
    # ... but neither the password nor the task token reached the agent's log.
    token = json.loads((out / "journal.json").read_text())["token"]
    text = captured.getvalue()
    assert len(token) > 20 and token not in text
    assert secret["password"] not in text
    events = [json.loads(line) for line in text.splitlines()]
    started = [e for e in events if e["event"] == "job_started"]
    ended = [e for e in events if e["event"] == "job_finished"]
    assert len(started) == len(ended) == 1
    assert ended[0]["job_name"] == "hello.sh" and ended[0]["workflow_execution_id"] == f"exec-{uid}"
    assert ended[0]["exit_code"] == 0 and ended[0]["duration_ms"] == output["duration_ms"]
    # Acknowledged completions leave nothing in the journal.
    assert list(settings.state_dir.iterdir()) == []


def test_non_zero_exit_fails_with_the_exit_code_and_last_lines(
    aws: Any, uid: str, stack: Stack, tmp_path: Path
) -> None:
    settings = agent_settings(tmp_path, stack, output_tail_lines=5)
    write_script(
        settings.script_dir,
        "fails.sh",
        'for i in $(seq 1 30); do echo "step $i"; done\necho "ERROR: relation missing" >&2\nexit 7',
    )
    with agent_thread(settings):
        arn = start(aws, stack, task_input(uid, "fails.sh"), f"exec-{uid}")
        execution = finished(aws, arn)
    assert execution["status"] == "FAILED"
    error, cause = failure_of(aws, arn)
    assert error == "RSQL.ScriptFailed"
    assert "The script fails.sh failed with exit code 7." in cause
    assert cause.endswith("step 27\nstep 28\nstep 29\nstep 30\nERROR: relation missing")
    assert "step 26" not in cause
    row = audit_row(aws, stack, "fails.sh", f"exec-{uid}")
    assert row["execution_status"] == "Failed" and row["exit_code"] == 7
    assert row["error"] == "RSQL.ScriptFailed" and row["cause"] == cause


def test_timeout_kills_the_process_group(aws: Any, uid: str, stack: Stack, tmp_path: Path) -> None:
    settings = agent_settings(tmp_path, stack)
    write_script(
        settings.script_dir,
        "slow.sh",
        """
        bash -c 'sleep 300 & echo "grandchild $!"; wait' &
        sleep 300
        """,
    )
    with agent_thread(settings):
        arn = start(aws, stack, task_input(uid, "slow.sh", timeout_seconds=1), f"exec-{uid}")
        execution = finished(aws, arn)
    assert execution["status"] == "FAILED"
    error, cause = failure_of(aws, arn)
    assert error == "RSQL.ScriptTimeout"
    assert "timeout of 1 s" in cause and "SIGTERM" in cause
    row = audit_row(aws, stack, "slow.sh", f"exec-{uid}")
    assert row["execution_status"] == "TimedOut" and row["error"] == "RSQL.ScriptTimeout"
    assert 1000 <= row["duration_ms"] < 10_000
    local = settings.log_dir / f"wf-{uid}" / f"exec-{uid}" / "slow.sh.log"
    [grandchild] = [int(t.split()[1]) for _, _, t in log_lines(local) if t.startswith("grandc")]
    assert process_gone(grandchild)


def test_bad_job_names(aws: Any, uid: str, stack: Stack, tmp_path: Path) -> None:
    settings = agent_settings(tmp_path, stack)
    outside = write_script(tmp_path, "outside.sh", "echo should never run")
    (settings.script_dir / "link.sh").symlink_to(outside)
    (settings.script_dir / "a-directory.sh").mkdir()
    cases = {
        "../outside.sh": "RSQL.InvalidInput",
        "link.sh": "RSQL.InvalidInput",
        "/etc/hostname": "RSQL.InvalidInput",
        "missing.sh": "RSQL.ScriptNotFound",
        "a-directory.sh": "RSQL.ScriptNotFound",
    }
    with agent_thread(settings):
        arns = {
            name: start(aws, stack, task_input(uid, name), f"exec-{uid}-{i}")
            for i, name in enumerate(cases)
        }
        for name, expected in cases.items():
            assert finished(aws, arns[name])["status"] == "FAILED"
            assert failure_of(aws, arns[name])[0] == expected, name
    row = audit_row(aws, stack, "missing.sh", f"exec-{uid}")
    assert row["execution_status"] == "Failed" and row["error"] == "RSQL.ScriptNotFound"
    assert not list(settings.log_dir.rglob("*.log"))  # nothing ran


def test_invalid_input_fails_the_task_and_the_agent_keeps_polling(
    aws: Any, uid: str, stack: Stack, tmp_path: Path
) -> None:
    settings = agent_settings(tmp_path, stack)
    write_script(settings.script_dir, "ok.sh", "echo ok")
    bad_inputs = [
        '"just a string"',
        json.dumps({**task_input(uid, "ok.sh"), "stage_index": "first"}),
        json.dumps({k: v for k, v in task_input(uid, "ok.sh").items() if k != "timeout_seconds"}),
    ]
    with agent_thread(settings) as agent:
        for i, raw in enumerate(bad_inputs):
            arn = start(aws, stack, raw, f"bad-{uid}-{i}")
            assert finished(aws, arn)["status"] == "FAILED"
            error, cause = failure_of(aws, arn)
            assert error == "RSQL.InvalidInput" and "task input is not valid" in cause
            assert ["input", "stage_index", "timeout_seconds"][i] in cause
        arn = start(aws, stack, task_input(uid, "ok.sh"), f"exec-{uid}")
        assert finished(aws, arn)["status"] == "SUCCEEDED"
        assert agent.jobs_started == 4


def test_restart_skips_a_job_that_completed_in_the_earlier_run(
    aws: Any, uid: str, stack: Stack, tmp_path: Path
) -> None:
    settings = agent_settings(tmp_path, stack)
    marker = tmp_path / "ran"
    write_script(settings.script_dir, "done.sh", f"touch {marker}")
    write_script(settings.script_dir, "redo.sh", f"touch {marker}-redo")
    for job, status in (("done.sh", "Completed"), ("redo.sh", "Failed")):
        aws.ddb.put_item(
            TableName=stack.table,
            Item={
                "job_name": {"S": job},
                "workflow_execution_id": {"S": f"first-{uid}"},
                "execution_status": {"S": status},
                "log_stream": {"S": f"wf-{uid}/first-{uid}/{job}"},
            },
        )
    with agent_thread(settings):
        skipped = start(aws, stack, task_input(uid, "done.sh", restart_of=f"first-{uid}"), uid)
        rerun = start(aws, stack, task_input(uid, "redo.sh", restart_of=f"first-{uid}"), "r" + uid)
        skipped_execution, rerun_execution = finished(aws, skipped), finished(aws, rerun)
    assert skipped_execution["status"] == rerun_execution["status"] == "SUCCEEDED"
    output = json.loads(skipped_execution["output"])
    assert output["status"] == "Skipped" and output["log_stream"] == f"wf-{uid}/first-{uid}/done.sh"
    assert json.loads(rerun_execution["output"])["status"] == "Completed"
    assert not marker.exists() and Path(f"{marker}-redo").exists()
    row = audit_row(aws, stack, "done.sh", f"exec-{uid}")
    assert row["execution_status"] == "Skipped" and ISO.match(row["execution_end_ts"])


def test_a_retried_job_gets_attempt_2_and_its_own_log_stream(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    retry = [{"ErrorEquals": ["RSQL.ScriptFailed"], "IntervalSeconds": 1, "MaxAttempts": 1}]
    stack = make_stack(aws, uid, retry=retry)
    settings = agent_settings(tmp_path, stack)
    marker = tmp_path / "first-attempt-done"
    write_script(
        settings.script_dir,
        "flaky.sh",
        f"if [ -e {marker} ]; then echo second; else touch {marker}; echo first; exit 1; fi",
    )
    with agent_thread(settings) as agent:
        arn = start(aws, stack, task_input(uid, "flaky.sh"), f"exec-{uid}")
        execution = finished(aws, arn)
        assert agent.jobs_started == 2
    assert execution["status"] == "SUCCEEDED"
    stream = f"wf-{uid}/exec-{uid}/flaky.sh"
    assert json.loads(execution["output"])["log_stream"] == f"{stream}/2"
    row = audit_row(aws, stack, "flaky.sh", f"exec-{uid}")
    assert row["attempt"] == 2 and row["log_stream"] == f"{stream}/2"
    assert row["execution_status"] == "Completed" and "error" not in row and row["exit_code"] == 0
    assert log_messages(aws, stack, stream) == ["first"]
    assert log_messages(aws, stack, f"{stream}/2") == ["second"]
    assert (settings.log_dir / f"wf-{uid}" / f"exec-{uid}" / "flaky.sh.2.log").exists()


def _count_calls(agent: Any) -> dict[str, int]:
    """Count every API call the agent's clients make from now on (botocore's own hook)."""
    counts: dict[str, int] = {}

    def count(model: Any, **_: Any) -> None:
        counts[model.name] = counts.get(model.name, 0) + 1

    for client in (agent.aws.sfn, agent.aws.logs, agent.aws.dynamodb, agent.aws.secretsmanager):
        client.meta.events.register("before-call", count)
    return counts


@pytest.mark.parametrize(
    ("body", "calls", "streams"),
    [
        (
            "echo one\necho two",
            # audit Running, audit Completed; the stream and its one batch; the completion
            {"UpdateItem": 2, "CreateLogStream": 1, "PutLogEvents": 1, "SendTaskSuccess": 1},
            1,
        ),
        # A job that prints nothing has no log stream: no CreateLogStream, no PutLogEvents.
        ("exit 0", {"UpdateItem": 2, "SendTaskSuccess": 1}, 0),
    ],
    ids=["prints", "silent"],
)
def test_the_calls_of_a_short_job_besides_the_poll(
    aws: Any, uid: str, stack: Stack, tmp_path: Path, body: str, calls: dict[str, int], streams: int
) -> None:
    settings = agent_settings(tmp_path, stack)
    write_script(settings.script_dir, "quick.sh", body)
    with agent_thread(settings) as agent:
        counts = _count_calls(agent)
        arn = start(aws, stack, task_input(uid, "quick.sh"), f"exec-{uid}")
        assert finished(aws, arn)["status"] == "SUCCEEDED"
    assert counts == calls
    described = aws.logs.describe_log_streams(
        logGroupName=stack.log_group, logStreamNamePrefix=f"wf-{uid}/"
    )
    assert len(described["logStreams"]) == streams


def test_an_unreadable_secret_stops_the_start_with_a_clear_error(
    stack: Stack, tmp_path: Path
) -> None:
    settings = agent_settings(tmp_path, stack, secret_id="no/such/secret", aws_call_deadline_s=1)

    async def start_agent() -> None:
        async with running(settings):
            raise AssertionError("the agent started without its secret")

    with pytest.raises(StartupError, match="cannot read secret 'no/such/secret'"):
        asyncio.run(start_agent())
