"""The on-disk journal of tasks this host holds (RSQL_AGENT_STATE_DIR, one file per task,
mode 0600: a task token is a credential).

An entry is written when a task is received, updated with the job's process group once it
runs and with the completion before that is sent, and removed once the service acknowledged
the completion. So after a crash or a SIGKILL of the agent, the next start finds every task
it was responsible for: it stops the process groups left running, re-sends completions that
were never acknowledged, and fails the interrupted jobs back with Agent.ShuttingDown so the
state machine retries them at once instead of after a heartbeat timeout.

Files are replaced atomically (write, then rename) but not fsync'ed: the journal covers the
agent process dying; a host losing power also loses the scripts, and the heartbeat timeout
recovers those tasks.
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
    """Entries keyed by task token, one file each under `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._entries: dict[str, Entry] = {}

    def hold(self, token: str) -> Entry:
        """Record a task just received."""
        entry = Entry(token=token)
        self._entries[token] = entry
        self._write(entry)
        return entry

    def update(self, token: str, **changes: Any) -> None:
        """Change fields of a held task's entry (job key, attempt, pgid, completion)."""
        entry = self._entries.get(token)
        if entry is None:  # re-sent completions of a previous run are not held
            entry = self._entries[token] = Entry(token=token)
        for name, value in changes.items():
            setattr(entry, name, value)
        self._write(entry)

    def remove(self, token: str) -> None:
        """The service acknowledged the completion (or the task is gone): forget it."""
        self._entries.pop(token, None)
        with contextlib.suppress(FileNotFoundError):
            self._path(token).unlink()

    def load(self) -> list[Entry]:
        """Entries left by a previous run of the agent (unreadable files are set aside)."""
        entries = []
        for path in sorted(self._dir.glob(f"*{SUFFIX}")):
            try:
                entries.append(Entry.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("journal_entry_unreadable", path=str(path), error=str(exc))
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        return entries

    def _path(self, token: str) -> Path:
        return self._dir / (hashlib.sha256(token.encode()).hexdigest()[:40] + SUFFIX)

    def _write(self, entry: Entry) -> None:
        try:
            self._write_file(entry)
        except OSError as exc:
            # A full disk must not fail the job; the heartbeat timeout still covers the task.
            log.warning("journal_write_failed", error=str(exc))

    def _write_file(self, entry: Entry) -> None:
        path = self._path(entry.token)
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps(asdict(entry)).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
