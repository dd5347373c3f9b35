"""`idle`, `memory` and `logs`: one emulator, one agent each.

- idle: the agent with nothing queued, AWS's 60 s long poll; API calls counted by a relay
  (`bench.counter`) over a window from its first poll on, and the agent's CPU over it.
- memory: the agent's RSS settled at idle, then with 64 jobs running at once (they wait on a
  FIFO until the bench has read the figure).
- logs: one job printing N numbered 100-byte lines. The script's own wall time (it records
  its first and last instruction) under the agent against the same script piped into a file
  (`| cat > file`, the least any capture costs); every line read back from CloudWatch and
  checked in order; the agent's CPU per million lines and its RSS growth (sampled).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from agent.journal import SUFFIX
from agent.schema import log_stream_name
from bench import common
from bench.counter import CallCounter

POLL_WAIT_S = 60.0


def run_all(
    root: Path, idle_window_s: float, log_lines: int, wanted: set[str]
) -> dict[str, dict[str, Any]]:
    """The benchmarks `wanted` of the three, on one fresh emulator, logs last (the emulator
    keeps every line it received)."""
    results: dict[str, dict[str, Any]] = {}
    with common.emulator(root / "emulator", POLL_WAIT_S) as env:
        if "idle" in wanted:
            print("idle ...", flush=True)
            results["idle"] = idle(root / "idle", env, idle_window_s)
        if "memory" in wanted:
            print("memory ...", flush=True)
            results["memory"] = memory(root / "memory", env, 64)
        if "logs" in wanted:
            print("logs ...", flush=True)
            results["logs"] = logs(root / "logs", env, log_lines)
    return results


def idle(root: Path, env: dict[str, str], window_s: float) -> dict[str, Any]:
    """Calls counted from the agent's first poll on, for `window_s`: its first polls and the
    ones that follow as each long poll comes back empty."""
    work = common.Workdir(root)
    stack = common.make_stack(env, "idle", 0)
    counter = CallCounter(int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]))
    pollers = 2
    try:
        with common.agent(stack, work, counter.endpoint_url, pollers=pollers) as agent:
            first_poll = common.wait_for(lambda: counter.first("GetActivityTask"), 30, "a poll")
            cpu_before = common.cpu_s(agent.pid)
            time.sleep(max(0.0, first_poll + window_s - time.monotonic()))  # the window
            cpu_spent_s = common.cpu_s(agent.pid) - cpu_before
            calls = counter.count(first_poll, first_poll + window_s)
    finally:
        counter.close()
    return {
        "pollers": pollers,
        "api_calls_per_min": sum(calls.values()) * 60 / window_s,
        "polls_per_min": calls["GetActivityTask"] * 60 / window_s,
        "calls": dict(calls),
        "cpu_ms_per_s": cpu_spent_s * 1000 / window_s,
        "window_s": window_s,
    }


def memory(root: Path, env: dict[str, str], jobs: int) -> dict[str, Any]:
    work = common.Workdir(root)
    os.mkfifo(work.go_fifo)
    stack = common.make_stack(env, "memory", 0)
    with common.agent(stack, work, concurrency=jobs) as agent:
        common.wait_for(lambda: _quiet(agent.pid), 30, "the agent to settle")
        idle_mb = common.rss_mb(agent.pid)
        inputs = common.job_inputs(jobs, "m", lambda i: ["wait", f"m-{i}"])
        # An inline Map runs at most 40 iterations at once (as on AWS): one execution per 32.
        executions = [stack.start(inputs[i : i + 32]) for i in range(0, jobs, 32)]
        common.wait_for(lambda: len(work.records(work.starts)) >= jobs, 120, "all jobs running")
        running_mb = common.rss_mb(agent.pid)
        running_now = len(work.records(work.starts)) - len(work.records(work.ends))
        # Unblock every script: one line each (bash reads a pipe a byte at a time).
        fd = os.open(work.go_fifo, os.O_RDWR)
        try:
            os.write(fd, b"go\n" * jobs)
            statuses = {stack.wait(execution, 300) for execution in executions}
            status = statuses.pop() if len(statuses) == 1 else "/".join(sorted(statuses))
        finally:
            os.close(fd)
    return {
        "idle_mb": idle_mb,
        "running_mb": running_mb,
        "jobs_running": running_now,
        "status": status,
    }


def _quiet(pid: int) -> bool:
    before = common.cpu_s(pid)
    time.sleep(0.5)  # a measurement window: no CPU spent in it = start-up is over
    return common.cpu_s(pid) - before < 0.02


def logs(root: Path, env: dict[str, str], lines: int) -> dict[str, Any]:
    work = common.Workdir(root)
    piped_s, cat_cpu_s = _piped(work, lines)
    stack = common.make_stack(env, "logs", 0)
    with common.agent(stack, work) as agent:
        common.wait_for(lambda: _quiet(agent.pid), 30, "the agent to settle")
        rss = _RssSampler(agent.pid)
        cpu_before = common.cpu_s(agent.pid)
        execution = stack.start(
            common.job_inputs(1, "logs", lambda i: ["lines", "l-0", str(lines)])
        )
        status = stack.wait(execution, 600)
        # The workflow moves on before CloudWatch has every line (the shipper goes on in the
        # background): the agent's work ends when its journal owes nothing more.
        common.wait_for(lambda: _settled(work), 600, "every line to be shipped")
        cpu_spent_s = common.cpu_s(agent.pid) - cpu_before
        rss.stop()
    under_agent_s = work.records(work.ends)["l-0"] - work.records(work.starts)["l-0"]
    stream = log_stream_name("bench", "logs-0", common.SCRIPT, 1)
    received, in_order = _read_back(stack, stream)
    return {
        "lines_printed": lines,
        "lines_received": received,
        "in_order": in_order,
        "wall_under_agent_s": under_agent_s,
        "wall_piped_s": piped_s,
        "cpu_s_per_million": cpu_spent_s * 1_000_000 / lines,
        "cat_cpu_s_per_million": cat_cpu_s * 1_000_000 / lines,
        "rss_growth_mb": rss.peak_mb - rss.first_mb,
        "status": status,
    }


def _settled(work: common.Workdir) -> bool:
    """The agent's journal holds no entry: every completion sent, every line shipped."""
    return not list((work.root / "state").glob(f"*{SUFFIX}"))


def _piped(work: common.Workdir, lines: int) -> tuple[float, float]:
    """The script's own wall time with its output piped into a file by `cat`, and `cat`'s
    CPU seconds."""
    script = work.scripts / common.SCRIPT
    env = {**os.environ, **work.script_env()}
    with open(work.root / "piped.txt", "wb") as sink:
        writer = subprocess.Popen(
            ["/bin/bash", str(script), "lines", "piped", str(lines)],
            env=env,
            stdout=subprocess.PIPE,
        )
        assert writer.stdout is not None
        cat = subprocess.Popen(["cat"], stdin=writer.stdout, stdout=sink)
        writer.stdout.close()
        _, _, usage = os.wait4(cat.pid, 0)
        cat.returncode = 0  # reaped by wait4 above
        writer.wait()
    wall_s = work.records(work.ends)["piped"] - work.records(work.starts)["piped"]
    return wall_s, usage.ru_utime + usage.ru_stime


def _read_back(stack: common.Stack, stream: str) -> tuple[int, bool]:
    """Events of the stream, oldest first: how many, and whether they are lines 1, 2, ...
    in order (as many as there are)."""
    expected = 1
    in_order = True
    kwargs: dict[str, Any] = {
        "logGroupName": stack.log_group,
        "logStreamName": stream,
        "startFromHead": True,
    }
    while True:
        page = stack.clients.logs.get_log_events(**kwargs)
        for event in page["events"]:
            in_order = in_order and event["message"] == f"{expected:099d}"
            expected += 1
        if not page["events"] or page["nextForwardToken"] == kwargs.get("nextToken"):
            return expected - 1, in_order
        kwargs["nextToken"] = page["nextForwardToken"]


class _RssSampler:
    """The agent's RSS every 20 ms, in a thread, until `stop()`."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.first_mb = common.rss_mb(pid)
        self.peak_mb = self.first_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, common.rss_mb(self._pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
