"""The on-disk journal of what this host owes the services (RSQL_AGENT_STATE_DIR, one file per
task, mode 0600: a task token is a credential).

An entry is written when a task is received and rewritten as the job goes: its process group
once the script runs, the script's end (exit code, duration) the moment it is known, the audit
write and completion it owes once they are decided, and how far its output has reached
CloudWatch. It is removed once the completion is delivered and the last line shipped. So after
a crash or a SIGKILL of the agent, the next start finds everything it was responsible for: it
stops process groups left running, reports a script that had ended instead of running it again,
fails interrupted jobs back with Agent.ShuttingDown, re-sends what was never acknowledged and
ships the rest of every log.

Files are rewritten in place with one write (see `_write`) and not fsync'ed: the journal
covers the agent process dying; a host losing power also loses the scripts, and the heartbeat
timeout recovers those tasks. Whatever a start finds that is not a valid entry (any bytes, any
JSON of another shape, a directory where an entry belongs, a FIFO, a symlink, a file it cannot
read, a file that is not the agent's) is moved into `set-aside/` with a warning, and the agent
starts. Other directories (`set-aside/` itself, `run/` of agent.launch) are left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = structlog.get_logger(__name__)

SUFFIX: Final = ".task.json"
SET_ASIDE_DIR: Final = "set-aside"
BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
# An entry holds at most a cause (32 KiB) and a task input: anything far larger is not ours,
# and a symlink to /dev/zero must not be read for ever.
MAX_ENTRY_BYTES: Final = 1024 * 1024


def current_boot_id() -> str:
    """Process group ids only mean something within one boot of the host."""
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


class _Record(BaseModel):
    # Strict: a journal written by this agent never needs coercion, so a value of the wrong
    # type means the file is not what it claims. Unknown keys are ignored (a newer agent's).
    model_config = ConfigDict(strict=True, extra="ignore", validate_assignment=True)


class Completion(_Record):
    """What the agent reports for a task: SendTaskSuccess output or SendTaskFailure."""

    kind: Literal["success", "failure"]
    output: str | None = None
    error: str | None = None
    cause: str | None = None


class ScriptEnd(_Record):
    """How the script ended (runner.ScriptResult), written the moment it is known."""

    exit_code: int
    signal_name: str | None = None
    timed_out: bool = False
    cancelled: bool = False
    cancel_reason: str | None = None  # errors.CancelReason's name
    duration_s: float = Field(ge=0)


class AuditEnd(_Record):
    """The job audit row's final write (audit.JobEnd), owed until the table accepted it."""

    status: str
    duration_ms: int = Field(ge=0)
    exit_code: int | None = None
    error: str | None = None
    cause: str | None = None


class Shipping(_Record):
    """Where a job's output goes and how much of the local file CloudWatch has: lines before
    byte `offset` are shipped, plus the first `piece` messages of the line that starts there
    (a line longer than a batch is shipped in pieces)."""

    log_group: str = Field(min_length=1)
    log_stream: str = Field(min_length=1)
    path: str = Field(min_length=1)
    offset: int = Field(default=0, ge=0)
    piece: int = Field(default=0, ge=0)
    # Set when the file could no longer be written: bytes after it are a cut write.
    limit: int | None = Field(default=None, ge=0)
    done: bool = False


class Entry(_Record):
    """One task this host holds or still owes something for."""

    token: str = Field(min_length=1)
    task_input: str = ""
    boot_id: str = Field(default_factory=current_boot_id)
    attempt: int | None = Field(default=None, ge=1)
    log_stream: str | None = None
    # Never 0 or 1 or negative: killpg on those would hit far more than a job.
    pgid: int | None = Field(default=None, gt=1)
    # The group leader's start time (clock ticks since boot): a pgid whose leader runs with
    # another start time is somebody else's group now.
    pgid_start_ticks: int | None = None
    script_end: ScriptEnd | None = None
    audit_end: AuditEnd | None = None
    completion: Completion | None = None
    reported: bool = False
    shipping: Shipping | None = None

    @property
    def settled(self) -> bool:
        """Nothing more is owed: the completion is delivered and every line shipped."""
        return self.reported and (self.shipping is None or self.shipping.done)


class Journal:
    """Entries keyed by task token, one file each under `state_dir`, kept open while held."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._entries: dict[str, Entry] = {}
        self._fds: dict[str, int] = {}

    def hold(self, token: str, task_input: str = "") -> Entry:
        """Record a task just received."""
        entry = self._entries[token] = Entry(token=token, task_input=task_input)
        self._write(entry)
        return entry

    def get(self, token: str) -> Entry | None:
        return self._entries.get(token)

    def note(self, token: str, **changes: Any) -> Entry:
        """Change fields of an entry in memory only; the next `update` writes them."""
        entry = self._entries.get(token) or self.hold(token)
        for name, value in changes.items():
            setattr(entry, name, value)
        return entry

    def update(self, token: str, **changes: Any) -> None:
        """Change fields of an entry (held, or a previous run's being settled) and write it;
        an entry that owes nothing more is removed instead."""
        entry = self.note(token, **changes)
        if entry.settled:
            self.remove(token)
        else:
            self._write(entry)

    def remove(self, token: str) -> None:
        """Forget an entry (its completion delivered and its log shipped, or no longer owed)."""
        self._entries.pop(token, None)
        fd = self._fds.pop(token, None)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self._path(token).unlink()

    def held_files(self) -> set[Path]:
        """The files of the entries this journal holds (housekeeping must leave them)."""
        return {self._path(token) for token in self._entries}

    def owed_logs(self) -> set[Path]:
        """Local logs whose lines CloudWatch does not have yet (housekeeping must leave them)."""
        return {
            Path(e.shipping.path)
            for e in self._entries.values()
            if e.shipping is not None and not e.shipping.done
        }

    def load(self) -> list[Entry]:
        """Entries left by a previous run of the agent, now held by this one. Anything else in
        the directory is set aside with a warning."""
        entries = []
        for path in sorted(self._dir.iterdir()):
            if _agents_directory(path):
                continue
            try:
                entry = _read_entry(path)
            except (OSError, ValueError) as exc:
                self._set_aside(path, exc)
                continue
            if path.name != self._path(entry.token).name:
                self._set_aside(path, ValueError("the file name does not match its token"))
                continue
            self._entries[entry.token] = entry
            entries.append(entry)
        return entries

    def _set_aside(self, path: Path, why: Exception) -> None:
        target_dir = self._dir / SET_ASIDE_DIR
        target = target_dir / f"{path.name}.{time.time_ns()}"
        try:
            target_dir.mkdir(mode=0o700, exist_ok=True)
            path.rename(target)
        except OSError as exc:
            log.warning("journal_entry_ignored", path=str(path), error=str(why), move=str(exc))
            return
        log.warning("journal_entry_set_aside", path=str(path), error=str(why), to=str(target))

    def _path(self, token: str) -> Path:
        return self._dir / (hashlib.sha256(token.encode()).hexdigest()[:40] + SUFFIX)

    def _write(self, entry: Entry) -> None:
        try:
            fd = self._fds.get(entry.token)
            if fd is None:
                flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = self._fds[entry.token] = os.open(self._path(entry.token), flags, 0o600)
            # Rewritten in place (creating a file costs far more than writing one): the new
            # entry and a newline first, then the file cut to it. An agent killed in between
            # leaves the new first line followed by old bytes, and only the first line is read.
            data = entry.model_dump_json().encode() + b"\n"
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except OSError as exc:
            # A full disk must not fail the job; the heartbeat timeout still covers the task.
            log.warning("journal_write_failed", error=str(exc))


def _agents_directory(path: Path) -> bool:
    """A directory of the agent's own (set-aside/, run/ of agent.launch), not an entry."""
    return path.is_dir() and not path.is_symlink() and not path.name.endswith(SUFFIX)


def _read_entry(path: Path) -> Entry:
    """The entry in `path`'s first line. Raises OSError or ValueError for anything else."""
    if not path.name.endswith(SUFFIX):
        raise ValueError("not a journal file name")
    # No symlinks, and no blocking open of a FIFO: only a regular file is an entry.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = os.read(fd, MAX_ENTRY_BYTES)
    finally:
        os.close(fd)
    try:
        return Entry.model_validate_json(data.split(b"\n", 1)[0])
    except ValidationError as exc:
        raise ValueError(f"not a journal entry: {exc.error_count()} problems") from None
