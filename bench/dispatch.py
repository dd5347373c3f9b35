"""`dispatch`: many silent jobs in one parallel stage, the agent against the yardsticks.

Each of the two workers gets a fresh emulator of its own (nothing one leaves behind can slow
the other down) and the same state machine: one Map whose MaxConcurrency equals the worker's
concurrency, so a task is scheduled only when a slot is free and the dispatch latency measured
is the worker's, not time spent queueing behind busy slots. Figures per worker:

- CPU per job: the worker process's own utime + stime (children excluded) over the run;
- jobs per second: jobs / (StartExecution to the execution's end);
- dispatch latency: from the `ActivityScheduled` history event of a task to the first
  instruction of its script (the script records `$EPOCHREALTIME`), p50 and p99;
- the emulator's CPU per job: it serves every call on the same cores, so a worker that makes
  more calls per job gets fewer jobs through it (the agent's audit writes are moto's
  DynamoDB), whatever its own CPU.

The third yardstick, the bare launcher, is this process starting the same script with
`subprocess.run` once per job: the CPU that no runner can avoid.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common

POLL_WAIT_S = 60.0


@dataclass
class WorkerRun:
    """One worker's figures in one run."""

    cpu_ms_per_job: float
    jobs_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    emulator_cpu_ms_per_job: float
    status: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def bare_launcher_cpu_ms(work: common.Workdir, jobs: int) -> float:
    """CPU of this process per `subprocess.run` of the silent script (children excluded)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(jobs):
        subprocess.run(
            ["/bin/bash", str(work.scripts / common.SCRIPT), "silent", f"bare-{i}"],
            env={**os.environ, **work.script_env()},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
        )
    after = resource.getrusage(resource.RUSAGE_SELF)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return spent * 1000 / jobs


def run_agent(root: Path, jobs: int, concurrency: int) -> WorkerRun:
    """The agent with `concurrency` slots on a fresh emulator."""
    work = common.Workdir(root)
    with common.emulator(root / "emulator", POLL_WAIT_S) as env:
        stack = common.make_stack(env, "agent", concurrency)
        with common.agent(stack, work, concurrency=concurrency) as agent:
            _settle(agent.pid)
            return _measure(stack, work, agent.pid, jobs, "agent")


def run_reference(root: Path, jobs: int, concurrency: int) -> WorkerRun:
    """The minimal reference worker with `concurrency` threads on a fresh emulator."""
    work = common.Workdir(root)
    with common.emulator(root / "emulator", POLL_WAIT_S) as env:
        stack = common.make_stack(env, "reference", concurrency)
        argv = [
            sys.executable,
            "-m",
            "bench.reference_worker",
            "--activity-arn",
            stack.activity_arn,
            "--script",
            str(work.scripts / common.SCRIPT),
            "--jobs",
            str(jobs),
            "--threads",
            str(concurrency),
        ]
        log = open(root / "reference.log", "wb")  # noqa: SIM115 - closed below
        worker = subprocess.Popen(
            argv, env={**env, **work.script_env()}, stdin=subprocess.DEVNULL, stdout=log
        )
        try:
            common.wait_for(
                lambda: b"started" in (root / "reference.log").read_bytes(), 60, "the worker"
            )
            _settle(worker.pid)
            figures = _measure(stack, work, worker.pid, jobs, "reference")
            worker.wait(60)
            return figures
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            log.close()


def _settle(pid: int) -> None:
    """Let the worker finish starting (imports, first polls) before the clock starts."""
    common.wait_for(lambda: _quiet(pid), 30, "the worker to settle")


def _quiet(pid: int) -> bool:
    before = common.cpu_s(pid)
    time.sleep(0.5)  # a measurement window: no CPU spent in it = start-up is over
    return common.cpu_s(pid) - before < 0.02


def _measure(
    stack: common.Stack, work: common.Workdir, pid: int, jobs: int, prefix: str
) -> WorkerRun:
    inputs = common.job_inputs(jobs, prefix, lambda i: ["silent", f"{prefix}-{i}"])
    emulator_pid = int(stack.env["EMULATOR_PID"])
    emulator_before = common.cpu_s(emulator_pid)
    cpu_before = common.cpu_s(pid)
    started = time.monotonic()
    execution = stack.start(inputs)
    status = stack.wait(execution, 600)
    wall_s = time.monotonic() - started
    cpu_spent_s = common.cpu_s(pid) - cpu_before
    emulator_spent_s = common.cpu_s(emulator_pid) - emulator_before
    latencies = _latencies_ms(stack.history(execution), work.records(work.starts))
    return WorkerRun(
        cpu_ms_per_job=cpu_spent_s * 1000 / jobs,
        jobs_per_s=jobs / wall_s,
        latency_p50_ms=common.percentile(latencies, 0.50),
        latency_p99_ms=common.percentile(latencies, 0.99),
        emulator_cpu_ms_per_job=emulator_spent_s * 1000 / jobs,
        status=status,
    )


def _latencies_ms(history: list[dict[str, Any]], starts: dict[str, float]) -> list[float]:
    """Scheduled-to-first-instruction of every job whose script started."""
    latencies = []
    for event in history:
        if event["type"] != "ActivityScheduled":
            continue
        task_input = json.loads(event["activityScheduledEventDetails"]["input"])
        job = task_input["args"][1]
        if job in starts:
            latencies.append((starts[job] - event["timestamp"].timestamp()) * 1000)
    if not latencies:
        raise SystemExit("bench: no job recorded its start")
    return latencies
