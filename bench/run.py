"""`make bench`: what the agent costs the host per job, against a bare launcher, same run.

On the local emulator it runs N trivial jobs (a two-line script) through a Map state machine
and a real `rsql-agent run` child process, and reads the agent's own CPU time (user + system,
its children excluded) from /proc before and after. The baseline, measured in the same run on
the same machine, is the least any runner pays: this process starting the same script N times
with `subprocess.run` and reading its output. Printed figures:

- agent CPU per job (ms) and the ratio against the bare launcher's CPU per job;
- the agent's idle CPU over the same wall time (polling only), for scale;
- jobs per second and the agent's peak RSS.

The AWS sample's wrappers cost ~670 ms of host CPU per job (its published figure, not measured
here). The emulator (moto) runs on the same cores: on a 2-core machine it competes with the
agent, so wall-clock figures are pessimistic; CPU figures are the agent's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud.tables import job_audit_spec

_CLK_TCK = os.sysconf("SC_CLK_TCK")
SCRIPT = "bench_job.sh"
SCRIPT_BODY = 'echo "job $RSQL_JOB_NAME starting"\necho "job done"\n'
ROLE_ARN = "arn:aws:iam::123456789012:role/rsql-bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs to run (default 100)")
    parser.add_argument("--concurrency", type=int, default=8, help="agent concurrency (default 8)")
    options = parser.parse_args(argv)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    work = Path(tempfile.mkdtemp(prefix="rsql-bench-"))
    try:
        return _bench(work, options.jobs, options.concurrency)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(work: Path, jobs: int, concurrency: int) -> int:
    from cloud.emulator.process import EmulatorProcess

    script_dir = work / "scripts"
    script_dir.mkdir()
    (script_dir / SCRIPT).write_text(SCRIPT_BODY)

    bare_ms = _bare_launcher_cpu_ms(script_dir / SCRIPT, jobs)

    print(f"starting the emulator in {work} ...", flush=True)
    with EmulatorProcess(work / "emulator") as emulator:
        env = {**os.environ, **emulator.env}
        clients = _Clients(env)
        stack = _make_stack(clients, work.name[-8:].replace("_", "-"))
        agent_env = {
            **env,
            "RSQL_AGENT_ACTIVITY_ARN": stack["activity_arn"],
            "RSQL_AGENT_SCRIPT_DIR": str(script_dir),
            "RSQL_AGENT_LOG_DIR": str(work / "logs"),
            "RSQL_AGENT_STATE_DIR": str(work / "state"),
            "RSQL_AGENT_JOB_AUDIT_TABLE": stack["table"],
            "RSQL_AGENT_LOG_GROUP": stack["log_group"],
            "RSQL_AGENT_CONCURRENCY": str(concurrency),
        }
        agent_log = work / "agent.log"
        with open(agent_log, "wb") as log_file:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent", "run"],
                env=agent_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait(lambda: b"agent_started" in agent_log.read_bytes(), 60, "the agent to start")
                figures = _measure(clients, stack, agent.pid, jobs)
            finally:
                agent.send_signal(signal.SIGTERM)
                agent.wait(60)
    _report(jobs, concurrency, bare_ms, figures)
    return 0 if figures["status"] == "SUCCEEDED" else 1


def _bare_launcher_cpu_ms(script: Path, jobs: int) -> float:
    """CPU of this process per `subprocess.run` of the script (children excluded)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(jobs):
        subprocess.run(
            ["/bin/bash", str(script)],
            env={**os.environ, "RSQL_JOB_NAME": SCRIPT},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
        )
    after = resource.getrusage(resource.RUSAGE_SELF)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return spent * 1000 / jobs


def _measure(clients: _Clients, stack: dict[str, str], pid: int, jobs: int) -> dict[str, Any]:
    # Idle: the pollers long-polling an empty activity, over a fixed window.
    idle_window_s = 3.0
    idle_before = _cpu_s(pid)
    time.sleep(idle_window_s)  # a measurement window, not a synchronisation
    idle_cpu_per_s = (_cpu_s(pid) - idle_before) / idle_window_s

    items = [
        {
            "workflow_id": "bench",
            "workflow_execution_id": f"bench-{i}",
            "stage_index": 0,
            "job_name": SCRIPT,
            "args": [],
            "timeout_seconds": 300,
            "heartbeat_seconds": 60,
            "restart_of": "",
        }
        for i in range(jobs)
    ]
    cpu_before = _cpu_s(pid)
    started = time.monotonic()
    arn = clients.sfn.start_execution(
        stateMachineArn=stack["state_machine_arn"], input=json.dumps({"jobs": items})
    )["executionArn"]

    def ended() -> str | None:
        status = clients.sfn.describe_execution(executionArn=arn)["status"]
        return None if status == "RUNNING" else str(status)

    status = _wait(ended, 600, "the bench execution to end")
    wall_s = time.monotonic() - started
    cpu_s = _cpu_s(pid) - cpu_before
    return {
        "status": status,
        "wall_s": wall_s,
        "cpu_ms_per_job": cpu_s * 1000 / jobs,
        "idle_cpu_ms_per_s": idle_cpu_per_s * 1000,
        "peak_rss_mb": _peak_rss_mb(pid),
    }


def _report(jobs: int, concurrency: int, bare_ms: float, figures: dict[str, Any]) -> None:
    per_job = figures["cpu_ms_per_job"]
    print()
    print(f"jobs: {jobs} (concurrency {concurrency}), execution {figures['status']}")
    print(f"wall time: {figures['wall_s']:.1f} s ({jobs / figures['wall_s']:.1f} jobs/s)")
    print(f"bare launcher CPU per job (baseline):  {bare_ms:8.2f} ms")
    print(f"agent CPU per job:                     {per_job:8.2f} ms")
    print(f"ratio agent / bare launcher:           {per_job / bare_ms:8.1f} x")
    print(f"agent idle CPU while polling:          {figures['idle_cpu_ms_per_s']:8.2f} ms/s")
    print(f"agent peak RSS:                        {figures['peak_rss_mb']:8.1f} MB")
    print("AWS sample wrappers (published figure): ~670 ms CPU per job")


def _cpu_s(pid: int) -> float:
    """utime + stime of `pid` itself, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class _Clients:
    def __init__(self, env: dict[str, str]) -> None:
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )
        url = env["AWS_ENDPOINT_URL"]
        self.sfn: Any = session.client("stepfunctions", endpoint_url=url)
        self.ddb: Any = session.client("dynamodb", endpoint_url=url)
        self.logs: Any = session.client("logs", endpoint_url=url)


def _make_stack(clients: _Clients, uid: str) -> dict[str, str]:
    activity_arn = clients.sfn.create_activity(name=f"bench-{uid}")["activityArn"]
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.jobs",
                "MaxConcurrency": 0,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "Run",
                    "States": {
                        "Run": {
                            "Type": "Task",
                            "Resource": activity_arn,
                            "TimeoutSeconds": 300,
                            "HeartbeatSeconds": 60,
                            "End": True,
                        }
                    },
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
    return {
        "activity_arn": activity_arn,
        "state_machine_arn": machine["stateMachineArn"],
        "table": table,
        "log_group": log_group,
    }


if __name__ == "__main__":
    sys.exit(main())
