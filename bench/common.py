"""What every benchmark shares: an emulator with a stack of its own, the agent as a child
process, and readings of a process's CPU and memory from /proc."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cloud.demo import stop_agent
from cloud.tables import job_audit_spec

T = TypeVar("T")
# Where `python -m agent` is imported from: this checkout, or another one (`--agent-source`)
# to measure a different version of the agent against the same yardsticks.
AGENT_SOURCE = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROLE_ARN = "arn:aws:iam::123456789012:role/rsql-bench"
# One job's task input, as the product's state machine builds it (docs/contracts.md).
JOB_DEFAULTS: dict[str, Any] = {
    "workflow_id": "bench",
    "stage_index": 0,
    "timeout_seconds": 600,
    "heartbeat_seconds": 60,
    "restart_of": "",
}


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` itself (every thread, its children excluded), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """A `kB` figure of /proc/PID/status (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def wait_for(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy; SystemExit after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) of `values`, interpolated."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    return cuts[min(len(cuts) - 1, max(0, round(fraction * 1000) - 1))]


def load_average() -> float:
    """The 1-minute load average: how busy the shared machine was."""
    return float(Path("/proc/loadavg").read_text().split()[0])


class Clients:
    """boto3 clients bound to one emulator."""

    def __init__(self, env: dict[str, str]) -> None:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )
        url = env["AWS_ENDPOINT_URL"]
        config = Config(retries={"total_max_attempts": 5, "mode": "standard"})
        self.sfn: Any = session.client("stepfunctions", endpoint_url=url, config=config)
        self.ddb: Any = session.client("dynamodb", endpoint_url=url, config=config)
        self.logs: Any = session.client("logs", endpoint_url=url, config=config)


@dataclass
class Stack:
    """One benchmark's own activity, Map state machine, job audit table and log group."""

    clients: Clients
    env: dict[str, str]
    activity_arn: str
    state_machine_arn: str
    table: str
    log_group: str
    # The agent's metrics (EMF) group; None: the agent's default, as a deployed stack has it.
    metrics_log_group: str | None = None
    executions: list[str] = field(default_factory=list)

    def start(self, jobs: list[dict[str, Any]]) -> str:
        """Start one execution running `jobs` (task inputs) in one parallel Map."""
        arn = str(
            self.clients.sfn.start_execution(
                stateMachineArn=self.state_machine_arn, input=json.dumps({"jobs": jobs})
            )["executionArn"]
        )
        self.executions.append(arn)
        return arn

    def wait(self, execution_arn: str, timeout_s: float) -> str:
        """The execution's final status."""

        def ended() -> str | None:
            status = self.clients.sfn.describe_execution(executionArn=execution_arn)["status"]
            return None if status == "RUNNING" else str(status)

        return wait_for(ended, timeout_s, "the bench execution to end")

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = self.clients.sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]


def make_stack(env: dict[str, str], uid: str, max_concurrency: int) -> Stack:
    """An activity, a state machine running `$.jobs` in a Map of that activity's Task (at most
    `max_concurrency` at once, 0 = all), a job audit table and a log group."""
    clients = Clients(env)
    activity_arn = clients.sfn.create_activity(name=f"bench-{uid}")["activityArn"]
    task = {
        "Type": "Task",
        "Resource": activity_arn,
        "TimeoutSeconds": 900,
        "HeartbeatSeconds": 60,
        "End": True,
    }
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.jobs",
                "MaxConcurrency": max_concurrency,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "Run",
                    "States": {"Run": task},
                },
                "End": True,
            }
        },
    }
    machine = clients.sfn.create_state_machine(
        name=f"bench-{uid}", definition=json.dumps(definition), roleArn=ROLE_ARN
    )
    table = f"bench-{uid}-job-audit"
    clients.ddb.create_table(**job_audit_spec(table).create_params(tags=[]))
    log_group = f"/bench/{uid}/jobs"
    clients.logs.create_log_group(logGroupName=log_group)
    # A host publishes its metrics once a minute: count that call as a deployed host makes it.
    metrics_log_group = f"/bench/{uid}/metrics"
    clients.logs.create_log_group(logGroupName=metrics_log_group)
    return Stack(
        clients, env, activity_arn, machine["stateMachineArn"], table, log_group, metrics_log_group
    )


def job_inputs(count: int, prefix: str, args: Callable[[int], list[str]]) -> list[dict[str, Any]]:
    """`count` task inputs of the bench script, each its own audit row (execution id)."""
    return [
        {
            **JOB_DEFAULTS,
            "workflow_execution_id": f"{prefix}-{i}",
            "job_name": SCRIPT,
            "args": args(i),
        }
        for i in range(count)
    ]


SCRIPT = "bench_job.sh"
# The script under test: what it does comes from its first argument, so one file serves every
# benchmark. `start` records the job id and when its first instruction ran (a bash builtin
# clock, no fork) in $RSQL_BENCH_STARTS; `lines N` prints N numbered 100-byte lines; `wait`
# blocks until the bench writes a line to the FIFO $RSQL_BENCH_GO; `sleep S` sleeps.
SCRIPT_BODY = r"""printf '%s %s\n' "$2" "$EPOCHREALTIME" >> "$RSQL_BENCH_STARTS"
case "$1" in
  silent) ;;
  lines) seq -f '%099.0f' 1 "$3" ;;
  wait) exec 3<>"$RSQL_BENCH_GO"; read -r -u 3 _ ;;
  sleep) echo "sleeping $3 s"; sleep "$3"; echo "done" ;;
esac
printf '%s %s\n' "$2" "$EPOCHREALTIME" >> "$RSQL_BENCH_ENDS"
"""


@dataclass
class Workdir:
    """Where one benchmark keeps its script, the agent's files and the scripts' records."""

    root: Path

    def __post_init__(self) -> None:
        self.scripts.mkdir(parents=True, exist_ok=True)
        (self.scripts / SCRIPT).write_text(SCRIPT_BODY)
        self.starts.touch()
        self.ends.touch()

    @property
    def scripts(self) -> Path:
        return self.root / "scripts"

    @property
    def starts(self) -> Path:
        return self.root / "starts.txt"

    @property
    def ends(self) -> Path:
        return self.root / "ends.txt"

    @property
    def go_fifo(self) -> Path:
        return self.root / "go.fifo"

    def script_env(self) -> dict[str, str]:
        return {
            "RSQL_BENCH_STARTS": str(self.starts),
            "RSQL_BENCH_ENDS": str(self.ends),
            "RSQL_BENCH_GO": str(self.go_fifo),
        }

    def records(self, path: Path) -> dict[str, float]:
        """job id -> epoch seconds, from the scripts' start or end records."""
        rows = (line.split() for line in path.read_text().splitlines() if line.strip())
        return {job: float(moment) for job, moment in rows}


@contextmanager
def emulator(root: Path, poll_wait_s: float = 60.0) -> Iterator[dict[str, str]]:
    """A fresh emulator (moto + bridge + embedded PostgreSQL); yields its client env, with
    its process id as EMULATOR_PID. Empty long polls last `poll_wait_s`, AWS's 60 s by
    default."""
    from cloud.emulator.process import EmulatorProcess

    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    extra = {"RSQL_EMULATOR_POLL_WAIT_S": str(poll_wait_s)}
    with EmulatorProcess(root, extra_env=extra) as process:
        yield {**os.environ, **process.env, "EMULATOR_PID": str(process.pid)}


@dataclass
class AgentProcess:
    """`rsql-agent run` as a child process, its JSON log in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f'"{name}"' in line:
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found

    def stop(self, timeout_s: float = 90.0) -> int:
        """SIGTERM; a drain waits for open long polls, so a second SIGTERM soon after (the
        work is done by now); SIGKILL after `timeout_s`."""
        if self.process.poll() is None:
            stop_agent(self.process, timeout_s)
        return self.process.wait(10)


@contextmanager
def agent(
    stack: Stack, work: Workdir, endpoint_url: str | None = None, **settings: Any
) -> Iterator[AgentProcess]:
    """A real agent polling the stack's activity until the block ends (then SIGTERM); its
    AWS calls go to `endpoint_url` if given (a `bench.counter.CallCounter`)."""
    env = {
        **stack.env,
        "AWS_ENDPOINT_URL": endpoint_url or stack.env["AWS_ENDPOINT_URL"],
        **work.script_env(),
        "RSQL_AGENT_ACTIVITY_ARN": stack.activity_arn,
        "RSQL_AGENT_SCRIPT_DIR": str(work.scripts),
        "RSQL_AGENT_LOG_DIR": str(work.root / "logs"),
        "RSQL_AGENT_STATE_DIR": str(work.root / "state"),
        "RSQL_AGENT_JOB_AUDIT_TABLE": stack.table,
        "RSQL_AGENT_LOG_GROUP": stack.log_group,
        "RSQL_AGENT_INSTANCE_ID": "i-0bench00000000001",
    }
    if stack.metrics_log_group:
        env["RSQL_AGENT_METRICS_LOG_GROUP"] = stack.metrics_log_group
    env.update({f"RSQL_AGENT_{key.upper()}": str(value) for key, value in settings.items()})
    log_path = work.root / f"agent-{len(list(work.root.glob('agent-*.log')))}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run"],
            cwd=AGENT_SOURCE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    running = AgentProcess(process, log_path)
    try:
        wait_for(lambda: running.events("agent_started") or _exited(running), 60, "the agent")
        if process.poll() is not None:
            raise SystemExit(f"bench: the agent exited: {log_path.read_text()[-2000:]}")
        yield running
    finally:
        running.stop()


def _exited(running: AgentProcess) -> bool:
    return running.process.poll() is not None
