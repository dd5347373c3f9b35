"""Watches, from outside, that no job ever runs on two hosts at once.

Every `interval_s` it scans /proc for the soak's scripts (their environment carries the soak's
seed), keeps only process-group leaders (the script's shell; what it starts shares its group)
and groups them by (execution, job). Two live groups of one job on different hosts in one scan
is a violation, whatever the agents believe. It sees what the kernel sees, so a script left
running by a dead agent counts.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from bench.chaos_fleet import SEED_ENV


@dataclass
class Overlap:
    execution_id: str
    job_name: str
    hosts: tuple[str, ...]


@dataclass
class Monitor:
    seed: int
    interval_s: float = 0.1
    scans: int = 0
    overlaps: list[Overlap] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="overlap-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        marker = f"{SEED_ENV}={self.seed}".encode()
        while not self._stop.wait(self.interval_s):
            self.scans += 1
            running: dict[tuple[str, str], set[str]] = {}
            for pid in _pids():
                found = _script(pid, marker)
                if found is not None:
                    key, host = found
                    running.setdefault(key, set()).add(host)
            for (execution_id, job_name), hosts in running.items():
                if len(hosts) > 1:
                    self.overlaps.append(Overlap(execution_id, job_name, tuple(sorted(hosts))))


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _script(pid: int, marker: bytes) -> tuple[tuple[str, str], str] | None:
    """((execution, job), host) of a soak script's shell, else None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            environ = file.read()
        if marker not in environ:
            return None
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state, ppid, pgrp. Zombies have ended.
    if int(fields[2]) != pid or fields[0] in (b"Z", b"X"):
        return None
    env = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
    try:
        key = (
            env[b"RSQL_WORKFLOW_EXECUTION_ID"].decode(),
            env[b"RSQL_JOB_NAME"].decode(),
        )
        return key, env[b"RSQL_AGENT_WORKER_NAME"].decode()
    except KeyError:
        return None  # the agent itself (it carries the marker too), or its reaper
