"""Helpers shared by the agent's tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.app import Agent
from agent.items import from_item
from agent.settings import Settings
from cloud.tables import job_audit_spec

T = TypeVar("T")


def write_script(script_dir: Path, name: str, body: str) -> Path:
    """A bash script under `script_dir` (the agent runs it with the shell, no +x needed)."""
    path = script_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("set -u\n" + body.strip() + "\n")
    return path


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # The state letter follows the command name in parentheses.
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def wait_for(predicate: Callable[[], T], timeout_s: float = 10.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def log_lines(path: Path) -> list[tuple[str, str, str]]:
    """(timestamp, stream, text) of each line of a job's local log file."""
    rows = []
    for line in path.read_bytes().decode().split("\n")[:-1]:
        timestamp, stream, text = line[:24], line[25:28], line[29:]
        rows.append((timestamp, stream, text))
    return rows


# -- against the emulator ---------------------------------------------------------------------

ROLE_ARN = "arn:aws:iam::123456789012:role/rsql-agent-tests"
SECRET_ID = "rsql/redshift"
INSTANCE_ID = "i-0test000000000001"


@dataclass(frozen=True)
class Stack:
    """The AWS side of one test: its own activity, state machine, audit table, log group."""

    uid: str
    activity_arn: str
    state_machine_arn: str
    table: str
    log_group: str


def task_state(activity_arn: str, timeout_s: int, heartbeat_s: int | None, retry: Any) -> dict:
    state: dict[str, Any] = {
        "Type": "Task",
        "Resource": activity_arn,
        # Always set: without it moto hides a 60 s total timeout behind HeartbeatSeconds.
        "TimeoutSeconds": timeout_s,
        "End": True,
    }
    if heartbeat_s is not None:
        state["HeartbeatSeconds"] = heartbeat_s
    if retry:
        state["Retry"] = retry
    return state


def make_stack(
    aws: Any,
    uid: str,
    *,
    timeout_s: int = 60,
    heartbeat_s: int | None = None,
    retry: list[dict[str, Any]] | None = None,
    map_jobs: bool = False,
) -> Stack:
    """Create the resources; the execution input is the task input as it is (`map_jobs`:
    a Map over `$.jobs`, each item a task input, all at once)."""
    activity_arn = aws.sfn.create_activity(name=f"t-{uid}")["activityArn"]
    task = task_state(activity_arn, timeout_s, heartbeat_s, retry)
    definition: dict[str, Any] = {"StartAt": "Run", "States": {"Run": task}}
    if map_jobs:
        definition = {
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map",
                    "ItemsPath": "$.jobs",
                    "MaxConcurrency": 0,
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "INLINE"},
                        **definition,
                    },
                    "End": True,
                }
            },
        }
    machine = aws.sfn.create_state_machine(
        name=f"t-{uid}", definition=json.dumps(definition), roleArn=ROLE_ARN
    )
    table = f"t-{uid}-job-audit"
    aws.ddb.create_table(**job_audit_spec(table).create_params(tags=[]))
    log_group = f"/t/{uid}/jobs"
    aws.logs.create_log_group(logGroupName=log_group)
    return Stack(uid, activity_arn, machine["stateMachineArn"], table, log_group)


def agent_settings(tmp_path: Path, stack: Stack, **overrides: Any) -> Settings:
    """Test-friendly settings: short intervals and deadlines, private directories."""
    values: dict[str, Any] = {
        "activity_arn": stack.activity_arn,
        "secret_id": SECRET_ID,
        "instance_id": INSTANCE_ID,
        "script_dir": tmp_path / "scripts",
        "log_dir": tmp_path / "logs",
        "state_dir": tmp_path / "state",
        "job_audit_table": stack.table,
        "log_group": stack.log_group,
        "worker_name": "test-worker",
        "concurrency": 4,
        "pollers": 2,
        "heartbeat_interval_s": 5,
        "drain_timeout_s": 10,
        "kill_grace_s": 0.5,
        "log_flush_interval_s": 0.2,
        "aws_call_deadline_s": 10,
        "completion_deadline_s": 10,
        # Metrics go nowhere unless a test creates their log group and turns them on.
        "metrics_enabled": False,
    }
    values.update(overrides)
    Path(values["script_dir"]).mkdir(parents=True, exist_ok=True)
    return Settings.load(**values)


def task_input(uid: str, job_name: str, **fields: Any) -> dict[str, Any]:
    """A task input of the contract's shape, for the execution named `exec-<uid>`."""
    return {
        "workflow_id": f"wf-{uid}",
        "workflow_execution_id": f"exec-{uid}",
        "stage_index": 0,
        "job_name": job_name,
        "args": [],
        "timeout_seconds": 30,
        "heartbeat_seconds": 30,
        "restart_of": "",
        **fields,
    }


def start(aws: Any, stack: Stack, execution_input: Any, name: str) -> str:
    raw = execution_input if isinstance(execution_input, str) else json.dumps(execution_input)
    response = aws.sfn.start_execution(
        stateMachineArn=stack.state_machine_arn, name=name, input=raw
    )
    return str(response["executionArn"])


def finished(aws: Any, execution_arn: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """describe_execution once the execution is no longer RUNNING."""

    def done() -> dict[str, Any] | None:
        described = aws.sfn.describe_execution(executionArn=execution_arn)
        return described if described["status"] != "RUNNING" else None

    return wait_for(done, timeout_s, f"execution {execution_arn} to end")


def failure_of(aws: Any, execution_arn: str) -> tuple[str, str]:
    """(error, cause) of a failed execution, from its history's last failure event."""
    events = aws.sfn.get_execution_history(executionArn=execution_arn, reverseOrder=True)
    for event in events["events"]:
        for key, details in event.items():
            if key.endswith("FailedEventDetails") and "error" in details:
                return details["error"], details.get("cause", "")
    raise AssertionError("no failure event in the execution history")


def audit_row(aws: Any, stack: Stack, job_name: str, execution_id: str) -> dict[str, Any]:
    item = aws.ddb.get_item(
        TableName=stack.table,
        Key={"job_name": {"S": job_name}, "workflow_execution_id": {"S": execution_id}},
        ConsistentRead=True,
    ).get("Item", {})
    return from_item(item)


def log_messages(aws: Any, stack: Stack, log_stream: str) -> list[str]:
    events = aws.logs.get_log_events(
        logGroupName=stack.log_group, logStreamName=log_stream, startFromHead=True
    )["events"]
    return [e["message"] for e in events]


@contextmanager
def agent_thread(settings: Settings, ready_timeout_s: float = 30.0) -> Iterator[Agent]:
    """Run an agent in a thread of its own (with its own event loop) for the block; on exit
    ask it to drain and wait until it has stopped."""
    agent = Agent(settings)
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(agent.run())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=main, name="agent", daemon=True)
    thread.start()
    wait_for(lambda: agent.ready.is_set() or failure, ready_timeout_s, "the agent to start")
    if failure:
        raise failure[0]
    try:
        yield agent
    finally:
        agent.request_stop()
        thread.join(settings.drain_timeout_s + 60)
        assert not thread.is_alive(), "the agent did not stop"
    if failure:
        raise failure[0]


def agent_process(
    settings: Settings, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`rsql-agent run` as a child process with `settings` in an env file; its output goes
    to `tmp_path/agent.out`. The caller stops it (SIGTERM) and waits."""
    env_file = tmp_path / "agent.env"
    lines = []
    for name, value in settings.model_dump(exclude_none=True).items():
        if name in settings.model_fields_set:
            lines.append(f"RSQL_AGENT_{name.upper()}={value}\n")
    env_file.write_text("".join(lines))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSQL_AGENT_")}
    env.update(extra_env or {})
    with open(tmp_path / "agent.out", "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--env-file", str(env_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def agent_events(tmp_path: Path) -> list[dict[str, Any]]:
    """The JSON log lines the agent process wrote so far (see `agent_process`)."""
    path = tmp_path / "agent.out"
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": "<not json>", "text": line})
    return events
