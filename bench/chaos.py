"""`make chaos`: a seeded soak of several agents against the emulator while everything breaks.

    python -m bench.chaos [--seed 7] [--duration-s 600] [--agents 4] [--heartbeat-s 30]

It deploys the real stack (state machine, tables) on a fresh emulator, puts three workflows
(sequential and parallel stages, 13 scripts that print numbered lines), and keeps each running
again and again for `--duration-s`, while:

- each host's own TCP proxy cuts its network for 5-120 s, slows responses or resets
  connections after the emulator answered (a lost response);
- agents are killed with SIGKILL or stopped with SIGTERM, and come back seconds later;
- the emulator answers a share of the agents' calls with ThrottlingException or HTTP 500;
- host h1 keeps its local logs on a 256 KB tmpfs, which fills up (needs root; else said so).

Then every fault is lifted, every run ends, and it prints the faults injected and the
invariants: every execution SUCCEEDED, no job row left Running, no job on two hosts at once
(seen from /proc), every printed line in CloudWatch in order (repeats where an answer was lost,
counted), every attempt accounted for, and each script that ran twice with why. Exit 0 only if
every invariant holds. The emulator's empty long polls last 5 s instead of 60 (a drain waits
for open polls, so stops are quicker); everything else is as on AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import chaos_checks as checks
from bench.chaos_faults import Chaos
from bench.chaos_fleet import Host, make_hosts, release, stop_all, wait_until, write_scripts
from bench.chaos_monitor import Monitor
from bench.chaos_report import report, verdicts

STACK = "chaos"
# A line of progress this often (seconds) during the soak.
PROGRESS_EVERY_S = 30.0
# (execution type, scripts, max_parallel) per stage.
WORKFLOWS: dict[str, list[tuple[str, list[str], int]]] = {
    "chaos_a": [
        ("sequential", ["a1.sh", "a2.sh"], 0),
        ("parallel", ["a3.sh", "a4.sh", "a5.sh"], 0),
    ],
    "chaos_b": [
        ("parallel", ["b1.sh", "b2.sh", "b3.sh", "b4.sh"], 2),
        ("sequential", ["b5.sh"], 0),
    ],
    "chaos_c": [("sequential", ["c1.sh", "c2.sh", "c3.sh"], 0)],
}
LINES = {"a1.sh": 200, "a2.sh": 1500, "a3.sh": 50, "a4.sh": 800, "a5.sh": 1000, "b1.sh": 300}
LINES |= {"b2.sh": 20, "b3.sh": 600, "b4.sh": 100, "b5.sh": 1000, "c1.sh": 2500, "c2.sh": 10}
LINES |= {"c3.sh": 700}


@dataclass
class Soak:
    """Everything one soak made, for the checks and the report."""

    seed: int
    duration_s: float
    heartbeat_s: float
    fault_rate: float
    work: Path
    emulator: Any
    stack: Any
    hosts: list[Host]
    monitor: Monitor
    chaos: Chaos
    runs: list[checks.Run]
    lines: dict[str, int]
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def runs_file(self) -> Path:
        return self.work / "runs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__.split("\n")[0],
        epilog="example:\n  python -m bench.chaos --seed 7 --duration-s 60",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration-s", type=float, default=600.0, help="soak length (600)")
    parser.add_argument("--agents", type=int, default=4, help="hosts, at least 3 (4)")
    parser.add_argument("--heartbeat-s", type=float, default=30.0, help="workflows' (30)")
    parser.add_argument("--fault-rate", type=float, default=0.02, help="emulator's (0.02)")
    parser.add_argument("--work-dir", type=Path, help="keep everything here (default: a temp dir)")
    options = parser.parse_args(argv)
    options.started = time.monotonic()
    if options.agents < 3:
        parser.error("--agents: at least 3 (two stay healthy while one is broken)")
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="rsql-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _soak(options, work)
    finally:
        if options.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _soak(options: argparse.Namespace, work: Path) -> int:
    from cloud.emulator.process import EmulatorProcess

    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    emulator = EmulatorProcess(
        work / "emulator",
        stack_name=STACK,
        extra_env={"RSQL_EMULATOR_POLL_WAIT_S": "5"},
        fault_rate=options.fault_rate,
        fault_seed=options.seed,
    )
    with emulator:
        os.environ.update(emulator.env)
        stack = _deploy(work, options.heartbeat_s)
        port = int(emulator.env["MOTO_PORT"])
        hosts = make_hosts(
            work, options.agents, port, dict(os.environ), options.seed, options.heartbeat_s
        )
        soak = Soak(
            options.seed,
            options.duration_s,
            options.heartbeat_s,
            options.fault_rate,
            work,
            emulator,
            stack,
            hosts,
            Monitor(options.seed).start(),
            Chaos(hosts, random.Random(options.seed), options.duration_s),
            [],
            LINES,
            {"start": options.started},
        )
        try:
            write_scripts(hosts, LINES, soak.runs_file)
            return _run(soak)
        finally:
            soak.monitor.stop()
            release(hosts)


def _deploy(work: Path, heartbeat_s: float) -> Any:
    from cloud import deploy as deployment
    from cloud.aws import Aws
    from cloud.names import StackNames
    from cloud.runs import put_workflow
    from cloud.stack import Stack

    names = StackNames(STACK)
    deployment.deploy(Aws(), names, say=lambda _: None)
    stack = Stack(Aws(), names)
    for workflow_id, stages in WORKFLOWS.items():
        path = work / f"{workflow_id}.json"
        path.write_text(json.dumps(_config(workflow_id, stages, heartbeat_s)))
        put_workflow(stack, path)
    return stack


def _config(
    workflow_id: str, stages: list[tuple[str, list[str], int]], heartbeat_s: float
) -> dict[str, Any]:
    return {
        "workflow_id": workflow_id,
        "workflow_description": "chaos soak",
        "heartbeat_seconds": int(heartbeat_s),
        "workflow_stages": [
            {
                "stage_description": f"stage {n}",
                "execution_flag": "y",
                "execution_type": kind,
                "scripts": scripts,
                **({"max_parallel": limit} if limit else {}),
            }
            for n, (kind, scripts, limit) in enumerate(stages, start=1)
        ],
    }


def _run(soak: Soak) -> int:
    soak.phases["setup"] = time.monotonic()
    for host in soak.hosts:
        host.start()
    print(
        f"rsql chaos soak: seed {soak.seed}, {soak.duration_s:g} s, {len(soak.hosts)} agents, "
        f"work dir {soak.work}",
        flush=True,
    )
    next_progress_s = PROGRESS_EVERY_S
    while soak.chaos.elapsed() < soak.duration_s:
        soak.chaos.tick()
        _keep_workflows_running(soak, start_new=True)
        if soak.chaos.elapsed() >= next_progress_s:
            _progress(soak, f"{soak.chaos.elapsed():.0f}/{soak.duration_s:g} s")
            next_progress_s += PROGRESS_EVERY_S
        time.sleep(1.0)
    soak.phases["soak"] = time.monotonic()
    soak.chaos.lift_all()
    _progress(soak, "faults lifted, waiting for every run to end")
    settle_s = 6 * soak.heartbeat_s + 120
    wait_until(lambda: _keep_workflows_running(soak, start_new=False), settle_s)
    wait_until(lambda: all(h.owes() == 0 for h in soak.hosts), 120)
    stop_all(soak.hosts)
    soak.monitor.stop()
    soak.phases["settle"] = time.monotonic()
    results = verdicts(soak)
    soak.phases["checks"] = time.monotonic()
    print(report(soak, results), flush=True)
    return 0 if all(v.held for v in results) else 1


def _progress(soak: Soak, when: str) -> None:
    """One line of where the soak stands, for a reader watching a ten-minute run."""
    statuses = Counter(run.status for run in soak.runs)
    runs = ", ".join(f"{n} {status.lower()}" for status, n in sorted(statuses.items()))
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(soak.chaos.counts.items()))
    print(f"[{when}] runs: {runs or 'none yet'}; faults so far: {faults or 'none'}", flush=True)


def _keep_workflows_running(soak: Soak, *, start_new: bool) -> bool:
    """Start the next run of every workflow whose last run ended; True when none runs."""
    from cloud.aws import CloudError
    from cloud.runs import start_workflow

    sfn = soak.stack.aws.sfn
    latest = {run.workflow_id: run for run in soak.runs}
    for workflow_id, stages in WORKFLOWS.items():
        run = latest.get(workflow_id)
        if run is not None and run.status == "RUNNING":
            run.status = sfn.describe_execution(executionArn=run.arn)["status"]
        if start_new and (run is None or run.status != "RUNNING"):
            try:
                started = start_workflow(soak.stack, workflow_id)
            except CloudError:
                continue  # the last run has not released its lock yet: next second
            jobs = [job for _, scripts, _ in stages for job in scripts]
            soak.runs.append(
                checks.Run(workflow_id, started.execution_name, started.execution_arn, jobs)
            )
    return all(run.status != "RUNNING" for run in soak.runs)


if __name__ == "__main__":
    sys.exit(main())
