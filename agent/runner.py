"""Running one script: where it is, what environment it gets, its process group.

The script runs as `<shell> <script> <args...>` (an argv list, never a shell string) in a new
session, so it and everything it starts share one process group the agent can signal as a
whole. Its stdout and stderr are read in chunks and handed to an `OutputLog` (agent.output),
which never blocks, so the pipes are always drained and the script never waits on the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

import structlog

from agent import errors, schema
from agent.output import STDERR, STDOUT, OutputLog

log = structlog.get_logger(__name__)

READ_CHUNK_BYTES: Final = 256 * 1024
# A script that prints flat out runs ahead of the agent by this much while the agent is busy
# (the default 64 KiB holds it up on every pause). A quarter of the default per-user quota
# of pipe memory (16,384 pages) for 64 jobs; stderr keeps the default.
STDOUT_PIPE_BYTES: Final = 256 * 1024
# How long to wait for the pipes to close once the process group is gone: a process that left
# the group (setsid) may hold them open forever.
PIPE_CLOSE_TIMEOUT_S: Final = 2.0
GROUP_POLL_S: Final = 0.05
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def resolve_script(script_dir: Path, job_name: str) -> Path:
    """The regular file `job_name` names inside `script_dir` (already resolved).

    Raises InvalidInput for a name that is absolute, climbs with `..` or resolves (through
    symlinks) outside the directory; ScriptNotFound when there is no regular file there.
    """
    name = PurePosixPath(job_name)
    if not job_name or "\x00" in job_name or name.is_absolute() or ".." in name.parts:
        raise errors.InvalidInput(f"job name {job_name!r} escapes the script directory")
    # Containment is checked on the fully resolved path, so a symlink inside the directory
    # cannot point the agent at /etc/shadow or another user's script.
    resolved = (script_dir / name).resolve()
    if not resolved.is_relative_to(script_dir):
        raise errors.InvalidInput(f"job name {job_name!r} resolves outside the script directory")
    if not resolved.is_file():
        what = "is not a regular file" if resolved.exists() else "does not exist"
        raise errors.ScriptNotFound(f"script {job_name!r} {what} in {script_dir}")
    return resolved


def job_env(
    base: Mapping[str, str],
    connection: Mapping[str, str],
    workflow_id: str,
    workflow_execution_id: str,
    job_name: str,
) -> dict[str, str]:
    """The agent's environment (as under any service manager), plus the connection settings
    of the secret, plus the job's context."""
    env = dict(base)
    env.update(connection)
    env[schema.JOB_ENV_WORKFLOW_ID] = workflow_id
    env[schema.JOB_ENV_WORKFLOW_EXECUTION_ID] = workflow_execution_id
    env[schema.JOB_ENV_JOB_NAME] = job_name
    return env


def log_file_path(
    log_dir: Path, workflow_id: str, workflow_execution_id: str, job_name: str, attempt: int
) -> Path:
    """`<log_dir>/<workflow_id>/<execution_id>/<job_name>[.<attempt>].log`, each part made
    safe as one file name (ids come from task input, which is not trusted with paths)."""
    parts = [safe_name(workflow_id), safe_name(workflow_execution_id)]
    stem = safe_name(job_name) + (f".{attempt}" if attempt > 1 else "")
    return log_dir.joinpath(*parts, f"{stem}.log")


def safe_name(part: str) -> str:
    """`part` as one safe file name (task input is not trusted with paths)."""
    cleaned = _UNSAFE.sub("_", part)[:200]
    return "_" + cleaned[1:] if cleaned.startswith(".") or not cleaned else cleaned


@dataclass(frozen=True)
class ScriptResult:
    """How a script ended. `exit_code` follows the shell: 128 + n when killed by signal n."""

    exit_code: int
    signal_name: str | None
    timed_out: bool
    cancelled: bool
    duration_s: float


async def run_script(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    output: OutputLog,
    timeout_s: float,
    cancel: asyncio.Event,
    kill_grace_s: float,
    on_spawn: Callable[[int], None] = lambda pgid: None,
    on_exit: Callable[[ScriptResult], None] = lambda result: None,
) -> ScriptResult:
    """Run `argv` in its own process group until it exits, `timeout_s` passes or `cancel` is
    set; in the last two cases SIGTERM the group, then SIGKILL it after `kill_grace_s`.
    Processes the script left behind in its group end with it. `on_spawn(pgid)` is called
    as soon as the group exists, `on_exit(result)` as soon as the script has exited (before
    its leftovers are ended and its pipes drained): the journal records both."""
    started = time.monotonic()
    out_read, out_write = _output_pipe(STDOUT_PIPE_BYTES)
    err_read, err_write = _output_pipe(None)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except BaseException:
        for fd in (out_read, err_read):
            os.close(fd)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    pgid = process.pid  # a new session's leader leads its own process group
    try:
        on_spawn(pgid)
        pumps = [
            asyncio.create_task(_pump(out_read, STDOUT, output)),
            asyncio.create_task(_pump(err_read, STDERR, output)),
        ]
        timed_out, cancelled = await _wait(process, timeout_s, cancel)
        if timed_out or cancelled:
            await _terminate(process, pgid, kill_grace_s)
        result = _result(process, timed_out, cancelled, time.monotonic() - started)
        on_exit(result)
        await _end_leftovers(pgid, kill_grace_s)
        await _drain_pipes(pumps)
    except BaseException:
        # Whatever went wrong above (even this task being cancelled), no process outlives it.
        _signal_group(pgid, signal.SIGKILL)
        raise
    return result


def _result(
    process: asyncio.subprocess.Process, timed_out: bool, cancelled: bool, duration_s: float
) -> ScriptResult:
    code = process.returncode if process.returncode is not None else -signal.SIGKILL
    return ScriptResult(
        exit_code=128 - code if code < 0 else code,
        signal_name=signal.Signals(-code).name if code < 0 else None,
        timed_out=timed_out,
        cancelled=cancelled,
        duration_s=duration_s,
    )


def _output_pipe(size_bytes: int | None) -> tuple[int, int]:
    """A pipe for the script's output (read end, write end), of `size_bytes` if given."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    if size_bytes is not None:
        # Over the user's quota of pipe memory the kernel refuses: the default size then.
        with contextlib.suppress(OSError):
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, size_bytes)
    return read_fd, write_fd


async def _pump(fd: int, stream: bytes, output: OutputLog) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_CHUNK_BYTES, loop=loop)
    pipe = os.fdopen(fd, "rb", buffering=0)  # the transport closes it
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
    )
    try:
        # Bounded reads, never readline(): a line without end must not grow a buffer.
        while chunk := await reader.read(READ_CHUNK_BYTES):
            output.feed(stream, chunk)
        output.end(stream)
    finally:
        transport.close()


async def _wait(
    process: asyncio.subprocess.Process, timeout_s: float, cancel: asyncio.Event
) -> tuple[bool, bool]:
    """(timed_out, cancelled) once the process exits, the timeout passes or cancel is set."""
    exited = asyncio.create_task(process.wait())
    cancelled = asyncio.create_task(cancel.wait())
    try:
        done, _ = await asyncio.wait(
            {exited, cancelled}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        exited.cancel()
        cancelled.cancel()
    if exited in done:
        return False, False
    return cancelled not in done, cancelled in done


async def _terminate(process: asyncio.subprocess.Process, pgid: int, grace_s: float) -> None:
    _signal_group(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=grace_s)
    except TimeoutError:
        _signal_group(pgid, signal.SIGKILL)
        await process.wait()


async def _end_leftovers(pgid: int, grace_s: float) -> None:
    """The job is over when its script exits; background children it left in its group would
    run on unaudited, so they get SIGTERM and, after the grace, SIGKILL."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    # Nothing notifies the end of processes that are not our children: poll, bounded.
    while _group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(GROUP_POLL_S)
    _signal_group(pgid, signal.SIGKILL)


async def _drain_pipes(pumps: list[asyncio.Task[None]]) -> None:
    done, pending = await asyncio.wait(pumps, timeout=PIPE_CLOSE_TIMEOUT_S)
    for task in pending:
        task.cancel()
    if pending:
        log.warning("output_pipe_held_open", detail="a process outside the job's group holds it")
        await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal every process of the group; False when the group is already empty."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The pgid was reused by someone else's group: not ours to signal.
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Does any process of the group still run? Zombies do not count: orphans are reaped by
    PID 1, which on some hosts takes a second, and there is nothing left to stop in them."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:  # no procfs: trust killpg
        return True
    return any(_running_member(pid, pgid) for pid in entries)


def _running_member(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    # After the command name: state, ppid, pgrp.
    return int(fields[2]) == pgid and fields[0] not in (b"Z", b"X")


def kill_group(pgid: int, leader_start_ticks: int | None) -> bool:
    """SIGKILL a process group a previous agent's job left (found in the journal at start),
    unless its id now belongs to someone else: its leader running with another start time."""
    if leader_start_ticks is not None:
        now = process_start_ticks(pgid)
        if now is not None and now != leader_start_ticks:
            return False
    return _signal_group(pgid, signal.SIGKILL)


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # After the command name: state is field 3, starttime field 22.
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
