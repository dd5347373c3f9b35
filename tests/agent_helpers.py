"""Helpers shared by the agent's tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

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


# Settings for tests that cut the network: calls fail fast during a cut (a real partition
# leaves them hanging until their timeouts), a job's completion waits 1 s for CloudWatch, and
# `outage_warning_interval_s=1` stands for the minute between two `aws_unreachable` warnings.
FAST_FAILING: dict[str, Any] = {
    "aws_call_deadline_s": 1,
    "aws_connect_timeout_s": 1,
    "aws_read_timeout_s": 2,
    "outage_warning_interval_s": 1,
    "log_flush_wait_s": 1,
    "heartbeat_interval_s": 1,
}


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
def agent_thread(
    settings: Settings, ready_timeout_s: float = 30.0, *, wait_for_polls: bool = False
) -> Iterator[Agent]:
    """Run an agent in a thread of its own (with its own event loop) for the block; on exit
    ask it to drain and wait until it has stopped. A drain keeps open polls open until they
    return (up to the emulator's POLL_WAIT_S); unless `wait_for_polls`, once nothing but
    polls is left the helper stops the agent at once, as a second SIGTERM would, so that
    tests not about the drain do not each wait out a poll."""
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
        if not wait_for_polls:
            wait_for(
                lambda: agent.idle or not thread.is_alive(),
                settings.drain_timeout_s + 60,
                "the agent to finish its jobs",
            )
            agent.force_stop()
        thread.join(settings.drain_timeout_s + 60)
        assert not thread.is_alive(), "the agent did not stop"
    if failure:
        raise failure[0]


# -- the agent as a real process ----------------------------------------------------------


@dataclass
class AgentProcess:
    """`rsql-agent run` as a child process (its own session), with its JSON log in `out`.
    It answers `poll`, `send_signal`, `wait` and `kill` as the Popen it wraps does."""

    popen: subprocess.Popen[bytes]
    out: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout=timeout)

    def events(self) -> list[dict[str, Any]]:
        """The agent's log events so far (lines that are not JSON, the reaper's, skipped)."""
        events = []
        for line in self.out.read_bytes().splitlines():
            with suppress(ValueError):
                events.append(json.loads(line))
        return events

    def count(self, event: str, level: str | None = None) -> int:
        return sum(
            1
            for e in self.events()
            if e.get("event") == event and (level is None or e.get("level") == level)
        )

    def wait_for_event(self, event: str, timeout_s: float = 30.0, times: int = 1) -> None:
        wait_for(
            lambda: self.count(event) >= times or self.popen.poll() is not None,
            timeout_s,
            f"the agent to log {event} x{times}",
        )
        assert self.count(event) >= times, f"the agent exited ({self.popen.returncode})"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (a drain) and wait; returns the exit code."""
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL the agent alone (its reaper lives on, as it would)."""
        self.popen.kill()
        self.popen.wait(timeout=10)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


def agent_process(
    settings: Settings,
    tmp_path: Path,
    extra_env: dict[str, str] | None = None,
    *,
    endpoint_url: str | None = None,
    name: str = "agent",
) -> AgentProcess:
    """`rsql-agent run` as a child process with `settings` (those set explicitly, in an env
    file), `extra_env`, and, when given, `endpoint_url` for every AWS call (a FaultProxy in
    front of the emulator); its output goes to `tmp_path/<name>.out`. Returns once the agent
    has started; the caller stops it (or leaves the `with` block, which kills it)."""
    env_file = tmp_path / f"{name}.env"
    values = settings.model_dump(mode="json", exclude_none=True, include=settings.model_fields_set)
    env_file.write_text("".join(f"RSQL_AGENT_{k.upper()}={v}\n" for k, v in values.items()))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("RSQL_AGENT_")}
    if endpoint_url is not None:
        child_env["AWS_ENDPOINT_URL"] = endpoint_url
    child_env.update(extra_env or {})
    out = tmp_path / f"{name}.out"
    with open(out, "wb") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--env-file", str(env_file)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
        )
    process = AgentProcess(popen, out)
    try:
        process.wait_for_event("agent_started")
    except BaseException:
        process.__exit__()  # never leave an agent running behind a failed test
        raise
    return process


def agent_events(tmp_path: Path, name: str = "agent") -> list[dict[str, Any]]:
    """The JSON log lines the agent process wrote so far (see `agent_process`)."""
    path = tmp_path / f"{name}.out"
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": "<not json>", "text": line})
    return events


def emulator_port(emulator: Any) -> int:
    """The port the emulator listens on (a FaultProxy's target)."""
    return int(urlsplit(emulator.endpoint_url).port or 0)


def journal_entries(state_dir: Path) -> list[dict[str, Any]]:
    """The journal entries in a state directory, as JSON."""
    entries = []
    for path in state_dir.glob("*.task.json"):
        with suppress(ValueError, OSError):
            entries.append(json.loads(path.read_bytes().split(b"\n", 1)[0]))
    return entries
