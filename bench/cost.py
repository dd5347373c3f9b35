"""`cost`: what a job costs in AWS, through the product itself.

The real stack (`rsql-cloud deploy`), a workflow put with `rsql-cloud workflow put` (a
sequential stage of 2 jobs, then a parallel stage of 6), started with `rsql-cloud workflow
start --wait`, run by a real agent whose calls pass through a counting relay. Figures:

- Step Functions state transitions per job, counted from the execution history (AWS bills
  each state entered), split into what each job adds and what the run adds once;
- each agent API's calls per job (the input of `bench.capacity`);
- SendTaskHeartbeat calls per job-minute (jobs long enough to beat, default settings).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.counter import CallCounter

JOB_S = 25
SEQUENTIAL, PARALLEL = 2, 6
ACCOUNT = "123456789012"


def run(root: Path, job_s: float = JOB_S) -> dict[str, Any]:
    work = common.Workdir(root)
    with common.emulator(root / "emulator", 60.0) as env:
        env = {**env, "RSQL_STACK_NAME": "benchcost"}
        outputs = json.loads(_cloud(env, "deploy", "--json"))
        names = _scripts(work, job_s)
        config = root / "workflow.json"
        config.write_text(json.dumps(_workflow(names)))
        _cloud(env, "workflow", "put", str(config))
        stack = common.Stack(
            common.Clients(env),
            env,
            outputs["activity_arn"],
            outputs["state_machine_arn"],
            outputs["job_audit_table"],
            outputs["log_group"],
        )
        counter = CallCounter(int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]))
        try:
            with common.agent(stack, work, counter.endpoint_url, concurrency=8) as agent:
                started = time.monotonic()
                _cloud(env, "workflow", "start", "bench_cost", "--execution-id", "cost-1", "--wait")
                calls = counter.count(started)
                agent_cpu_s = common.cpu_s(agent.pid)
        finally:
            counter.close()
        machine = outputs["state_machine_arn"].rsplit(":", 1)[1]
        arn = f"arn:aws:states:{env['AWS_REGION']}:{ACCOUNT}:execution:{machine}:cost-1"
        history = stack.history(arn)
    jobs = SEQUENTIAL + PARALLEL
    entered = [e for e in history if e["type"].endswith("StateEntered")]
    per_job_states = sum(
        1
        for e in entered
        if e["type"] == "TaskStateEntered" and e["stateEnteredEventDetails"]["name"] == "RunJob"
    )
    calls_per_job = {api: count / jobs for api, count in sorted(calls.items())}
    return {
        "jobs": jobs,
        "job_s": job_s,
        "transitions_per_job": len(entered) / jobs,
        "transitions_each_job_adds": per_job_states / jobs,
        "transitions_per_run": len(entered) - per_job_states,
        "calls_per_job": calls_per_job,
        "heartbeats_per_job_minute": calls.get("SendTaskHeartbeat", 0) / (jobs * job_s / 60),
        "agent_cpu_s": agent_cpu_s,
    }


def _scripts(work: common.Workdir, job_s: float) -> list[str]:
    """Jobs that print a line, sleep `job_s`, print another (one log stream each)."""
    names = []
    for i in range(SEQUENTIAL + PARALLEL):
        name = f"cost_{i}.sh"
        (work.scripts / name).write_text(f'echo "job {i} starting"\nsleep {job_s}\necho done\n')
        names.append(name)
    return names


def _workflow(names: list[str]) -> dict[str, Any]:
    return {
        "workflow_id": "bench_cost",
        "workflow_description": "bench: cost per job",
        "workflow_stages": [
            {
                "stage_description": "one by one",
                "execution_flag": "y",
                "execution_type": "sequential",
                "scripts": names[:SEQUENTIAL],
            },
            {
                "stage_description": "all at once",
                "execution_flag": "y",
                "execution_type": "parallel",
                "scripts": names[SEQUENTIAL:],
            },
        ],
    }


def _cloud(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "cloud", *args]
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: rsql-cloud {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout
