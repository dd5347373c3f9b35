"""Scripts die with the agent: a small watcher process that outlives it by a second.

The agent starts one watcher (`python -m agent.reaper FD`) at start, in a session of its own,
and keeps the write end of a pipe to it. Each script's process group is announced on the pipe
when it starts (`+PGID`) and when it is gone (`-PGID`). However the agent ends (SIGKILL, a
crash, the OOM killer, a clean exit), the kernel closes its end of the pipe, the watcher reads
EOF and ends every group still announced: SIGTERM, then SIGKILL after `GRACE_S`. So a job
never runs on after its agent, and no retry on another host can overlap it. The watcher is in
a session of its own so a Ctrl-C or a signal to the agent's process group does not reach it.

Why not PR_SET_PDEATHSIG on each script: it reaches only the group's leader (the shell), not
what the script started (psql, a `sleep &`), and it fires when the *thread* that forked exits,
which in a threaded daemon is not the same as the process. Why not a supervisor per job: one
more process per job costs every job its start-up time; this costs one process per agent.

A watcher that dies is started again (with every group announced again) at the next
announcement. The next start of the agent still kills whatever groups its journal lists, for
the case where both died.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Final

# From SIGTERM to SIGKILL of the groups a dead agent left: "within a second" all told.
GRACE_S: Final = 0.5
POLL_S: Final = 0.02


class Reaper:
    """The agent's side: start the watcher, announce groups, stop it at the end."""

    def __init__(self) -> None:
        self._groups: set[int] = set()
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None
        self._start()

    def watch(self, pgid: int) -> None:
        """A script's process group now exists: end it if the agent dies."""
        self._groups.add(pgid)
        self._send(f"+{pgid}\n")

    def unwatch(self, pgid: int) -> None:
        """The group is gone (or ended by the agent itself)."""
        if pgid in self._groups:
            self._groups.discard(pgid)
            self._send(f"-{pgid}\n")

    def close(self, timeout_s: float = 5.0) -> None:
        """Let the watcher go (it ends whatever is still announced) and wait for it."""
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self._process is not None:
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        read_end, write_end = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "agent.reaper", str(read_end)],
                pass_fds=(read_end,),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        self._pipe = write_end

    def _send(self, line: str) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._restart()
            return  # the new watcher was told every group, this one included
        try:
            assert self._pipe is not None
            os.write(self._pipe, line.encode())
        except (BrokenPipeError, AssertionError):
            self._restart()

    def _restart(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe)
        if self._process is not None:
            self._process.wait()
        self._start()
        assert self._pipe is not None
        if self._groups:
            os.write(self._pipe, "".join(f"+{g}\n" for g in self._groups).encode())


def watch(fd: int) -> set[int]:
    """Read announcements from `fd` until EOF; the groups still announced then."""
    groups: set[int] = set()
    pending = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(4096):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line[:1] == b"+" and line[1:].isdigit() and int(line[1:]) > 1:
                    groups.add(int(line[1:]))
                elif line[:1] == b"-" and line[1:].isdigit():
                    groups.discard(int(line[1:]))
    return groups


def end_groups(groups: set[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM every group, SIGKILL what is left after `grace_s`."""
    alive = {g for g in groups if _signal(g, signal.SIGTERM)}
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = {g for g in alive if _signal(g, 0)}
    for group in alive:
        _signal(group, signal.SIGKILL)


def _signal(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def main(argv: list[str]) -> int:
    # The agent's SIGINT at a terminal must not end the watcher before the agent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups = watch(int(argv[0]))
    if groups:
        print(f"rsql-agent reaper: the agent is gone; ending {len(groups)} job(s)", file=sys.stderr)
        end_groups(groups)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
