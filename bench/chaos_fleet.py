"""The chaos soak's hosts: one `rsql-agent run` process each, with its own directories and its
own FaultProxy between it and the emulator (a network cut hits one host, as in real life).
One host may keep its local logs on a tiny tmpfs, to fill up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from cloud.emulator.faultproxy import FaultProxy

# The marker the overlap monitor finds scripts of this soak by (in their environment).
SEED_ENV: Final = "RSQL_CHAOS_SEED"
SMALL_DISK: Final = "256k"


@dataclass
class Host:
    """One agent host: directories, proxy, and the agent process of its current life."""

    name: str
    root: Path
    proxy: FaultProxy
    env: dict[str, str]
    small_disk: bool = False
    process: subprocess.Popen[bytes] | None = None
    lives: int = 0
    _out: IO[bytes] | None = field(default=None, repr=False)

    @property
    def script_dir(self) -> Path:
        return self.root / "scripts"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start a new life of the agent (same directories: it settles what the last left)."""
        self.lives += 1
        self._close_out()
        self._out = open(self.root / f"agent.{self.lives}.out", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout_s: float) -> bool:
        """Wait for the agent to exit; True if it has."""
        if self.process is None:
            return True
        try:
            self.process.wait(max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            return False
        self._close_out()
        return True

    def owes(self) -> int:
        """Journal entries still owed (reports, lines to ship)."""
        return len(list(self.state_dir.glob("*.task.json")))

    def outputs(self) -> list[Path]:
        return sorted(self.root.glob("agent.*.out"))

    def _close_out(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def agent_env(
    base: dict[str, str], host: Host, seed: int, heartbeat_s: float, endpoint_url: str
) -> dict[str, str]:
    """The agent's environment: the emulator's, its own proxy as endpoint, its settings.
    Settings go in the environment (not an env file) so the scripts see the worker name."""
    env = {k: v for k, v in base.items() if not k.startswith("RSQL_AGENT_")}
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint_url,
            SEED_ENV: str(seed),
            "RSQL_AGENT_ACTIVITY_ARN": base["RSQL_AGENT_ACTIVITY_ARN"],
            "RSQL_AGENT_SECRET_ID": base["RSQL_AGENT_SECRET_ID"],
            "RSQL_AGENT_LOG_GROUP": base["RSQL_AGENT_LOG_GROUP"],
            "RSQL_AGENT_JOB_AUDIT_TABLE": base["RSQL_AGENT_JOB_AUDIT_TABLE"],
            "RSQL_AGENT_INSTANCE_ID": f"i-chaos-{host.name}",
            "RSQL_AGENT_WORKER_NAME": host.name,
            "RSQL_AGENT_SCRIPT_DIR": str(host.script_dir),
            "RSQL_AGENT_LOG_DIR": str(host.log_dir),
            "RSQL_AGENT_STATE_DIR": str(host.state_dir),
            "RSQL_AGENT_CONCURRENCY": "3",
            "RSQL_AGENT_POLLERS": "2",
            "RSQL_AGENT_HEARTBEAT_INTERVAL_S": str(min(5.0, heartbeat_s / 3)),
            "RSQL_AGENT_DRAIN_TIMEOUT_S": "10",
            "RSQL_AGENT_KILL_GRACE_S": "1",
            "RSQL_AGENT_AWS_CONNECT_TIMEOUT_S": "2",
            "RSQL_AGENT_AWS_READ_TIMEOUT_S": "5",
            "RSQL_AGENT_AWS_CALL_DEADLINE_S": "10",
            "RSQL_AGENT_LOG_FLUSH_WAIT_S": "2",
        }
    )
    return env


def make_hosts(
    work: Path,
    count: int,
    target_port: int,
    base_env: dict[str, str],
    seed: int,
    heartbeat_s: float,
) -> list[Host]:
    """`count` hosts under `work`, each with a started proxy; the first on a small disk if
    this machine lets us mount one."""
    hosts = []
    for number in range(1, count + 1):
        proxy = FaultProxy(target_port, seed=seed * 100 + number).start()
        host = Host(f"h{number}", work / f"h{number}", proxy, {})
        for directory in (host.script_dir, host.log_dir, host.state_dir):
            directory.mkdir(parents=True, exist_ok=True)
        host.env = agent_env(base_env, host, seed, heartbeat_s, proxy.endpoint_url)
        hosts.append(host)
    hosts[0].small_disk = mount_small_disk(hosts[0].log_dir)
    return hosts


def mount_small_disk(path: Path) -> bool:
    """A tiny tmpfs at `path` (needs root); False if it cannot be mounted here."""
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK},mode=0750", "tmpfs", str(path)],
        capture_output=True,
    )
    return done.returncode == 0


def stop_all(hosts: list[Host], patience_s: float = 3.0) -> None:
    """Stop every agent at once: SIGTERM (a drain, which waits for open polls), a second
    SIGTERM after `patience_s` (stop now: their work is done), SIGKILL as a last resort."""
    for sig, wait_s in ((signal.SIGTERM, patience_s), (signal.SIGTERM, 10.0)):
        for host in hosts:
            host.signal(sig)
        deadline = time.monotonic() + wait_s
        if all(host.wait(deadline - time.monotonic()) for host in hosts):
            return
    for host in hosts:
        host.signal(signal.SIGKILL)
        host.wait(10.0)


def release(hosts: list[Host]) -> None:
    """Stop every agent and proxy, unmount the small disk."""
    stop_all(hosts)
    for host in hosts:
        host.proxy.stop()
        if host.small_disk:
            subprocess.run(["umount", "-l", str(host.log_dir)], check=False)


def wait_until(predicate: object, timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll `predicate()` until true or `timeout_s` passes; its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def write_scripts(hosts: list[Host], lines_by_job: dict[str, int], runs_file: Path) -> None:
    """The same scripts on every host. Each records its start and end in `runs_file` (one
    appended line each: O_APPEND keeps them whole) and prints numbered lines over ~1-3 s."""
    for job, lines in lines_by_job.items():
        body = (
            "set -u\n"
            f'rec() {{ echo "$1 $RSQL_WORKFLOW_EXECUTION_ID $RSQL_JOB_NAME '
            f'$RSQL_AGENT_WORKER_NAME $$ $(date +%s.%N)" >> {runs_file}; }}\n'
            "rec start\n"
            f"for i in $(seq 1 {lines}); do\n"
            '  echo "line $i of $RSQL_JOB_NAME"\n'
            f"  if [ $((i % {max(1, lines // 10)})) = 0 ]; then sleep 0.2; fi\n"
            "done\n"
            "rec end\n"
        )
        for host in hosts:
            (host.script_dir / job).write_text(body)
            os.chmod(host.script_dir / job, 0o644)
