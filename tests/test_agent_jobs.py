"""The agent against the emulator: one job at a time, from poll to completion, with the
audit row, the CloudWatch stream and the local log checked."""

from __future__ import annotations

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
    start,
    task_input,
    write_script,
)

from agent import logs

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
