"""The on-disk journal of tasks this host holds (RSQL_AGENT_STATE_DIR, one file per task,
mode 0600: a task token is a credential).

An entry is written when a task is received, updated with the job's process group once it
runs and with the completion before that is sent, and removed once the service acknowledged
the completion. So after a crash or a SIGKILL of the agent, the next start finds every task
it was responsible for: it stops the process groups left running, re-sends completions that
were never acknowledged, and fails the interrupted jobs back with Agent.ShuttingDown so the
state machine retries them at once instead of after a heartbeat timeout.

Files are rewritten in place with one write (see `_write`) and not fsync'ed: the journal
covers the agent process dying; a host losing power also loses the scripts, and the heartbeat
timeout recovers those tasks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import structlog

log = structlog.get_logger(__name__)

SUFFIX: Final = ".task.json"
BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")


def current_boot_id() -> str:
    """Process group ids only mean something within one boot of the host."""
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


@dataclass
class Completion:
    """What the agent reports for a task: SendTaskSuccess output or SendTaskFailure."""

    kind: Literal["success", "failure"]
    output: str | None = None
    error: str | None = None
    cause: str | None = None


@dataclass
class Entry:
    token: str
    boot_id: str = field(default_factory=current_boot_id)
    job_name: str | None = None
    workflow_execution_id: str | None = None
    attempt: int | None = None
    pgid: int | None = None
    completion: Completion | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        completion = data.pop("completion", None)
        entry = cls(**data)
        entry.completion = Completion(**completion) if completion else None
        return entry


class Journal:
    """Entries keyed by task token, one file each under `state_dir`, kept open while held."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._entries: dict[str, Entry] = {}
        self._fds: dict[str, int] = {}

    def hold(self, token: str) -> Entry:
        """Record a task just received."""
        entry = self._entries[token] = Entry(token=token)
        self._write(entry)
        return entry

    def note(self, token: str, **changes: Any) -> None:
        """Change fields of a held entry in memory only; the next `update` writes them."""
        entry = self._entries.get(token) or self.hold(token)
        for name, value in changes.items():
            setattr(entry, name, value)

    def update(self, token: str, **changes: Any) -> None:
        """Change fields of an entry (held, or a previous run's being settled) and write it."""
        self.note(token, **changes)
        self._write(self._entries[token])

    def remove(self, token: str) -> None:
        """The service acknowledged the completion (or the task is gone): forget it."""
        self._entries.pop(token, None)
        fd = self._fds.pop(token, None)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self._path(token).unlink()

    def held_files(self) -> set[Path]:
        """The files of the entries this journal holds (housekeeping must leave them)."""
        return {self._path(token) for token in self._entries}

    def load(self) -> list[Entry]:
        """Entries left by a previous run of the agent (unreadable files are set aside)."""
        entries = []
        for path in sorted(self._dir.glob(f"*{SUFFIX}")):
            try:
                first_line = path.read_bytes().split(b"\n", 1)[0]
                entries.append(Entry.from_json(json.loads(first_line)))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("journal_entry_unreadable", path=str(path), error=str(exc))
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        return entries

    def _path(self, token: str) -> Path:
        return self._dir / (hashlib.sha256(token.encode()).hexdigest()[:40] + SUFFIX)

    def _write(self, entry: Entry) -> None:
        try:
            fd = self._fds.get(entry.token)
            if fd is None:
                flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                fd = self._fds[entry.token] = os.open(self._path(entry.token), flags, 0o600)
            # Rewritten in place (creating a file costs far more than writing one): the new
            # entry and a newline first, then the file cut to it. An agent killed in between
            # leaves the new first line followed by old bytes, and only the first line is read.
            data = json.dumps(asdict(entry)).encode() + b"\n"
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except OSError as exc:
            # A full disk must not fail the job; the heartbeat timeout still covers the task.
            log.warning("journal_write_failed", error=str(exc))
