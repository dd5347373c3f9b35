"""The host keeps itself clean: local job logs and the journal, pruned by age and total size.

At start and then every `housekeeping_interval_s`:

    log_dir    job logs (`*.log`) older than `log_dir_max_age_days` go; then, while the rest
               is larger than `log_dir_max_bytes`, the oldest go; directories left empty go
    state_dir  journal files (`*.task.json`, and what a start set aside in `set-aside/`)
               older than `journal_max_age_days`, then the oldest over `journal_max_bytes`:
               by then every task token they hold is long closed (a task that stops
               heartbeating is timed out by the service within its heartbeat_seconds)

Never a file a running job writes: the agent names them (its log, its journal entry) when the
pass decides, and they count towards the total without being candidates. Scanning and deleting
run in a thread, so a large log directory never stalls the event loop; removing empty
directories runs in the loop itself, where it cannot interleave with a job creating its
directory and file (both happen there without an await in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from agent.journal import SET_ASIDE_DIR
from agent.settings import Settings

log = structlog.get_logger(__name__)

DAY_S: Final = 86400.0
LOG_PATTERNS: Final = ("*.log",)
JOURNAL_PATTERNS: Final = ("*.task.json", f"{SET_ASIDE_DIR}/*")


@dataclass(frozen=True)
class FileInfo:
    path: Path
    mtime_s: float
    size: int


@dataclass(frozen=True)
class Budget:
    """What one directory may keep."""

    root: Path
    patterns: tuple[str, ...]
    max_age_s: float
    max_bytes: int
    recursive: bool


def scan(budget: Budget) -> list[FileInfo]:
    """The files of `budget` under its root (blocking: run in a thread)."""
    found = []
    globs = budget.root.rglob if budget.recursive else budget.root.glob
    for pattern in budget.patterns:
        for path in globs(pattern):
            try:
                info = path.lstat()
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISREG(info.st_mode):  # never follow a symlink out of the directory
                found.append(FileInfo(path, info.st_mtime, info.st_size))
    return found


def choose(
    files: Iterable[FileInfo], keep: set[Path], max_age_s: float, max_bytes: int, now_s: float
) -> list[FileInfo]:
    """What to delete: every file older than `max_age_s`, then the oldest until the rest fit
    in `max_bytes`. Files in `keep` are never chosen (but take their room)."""
    oldest_first = sorted(files, key=lambda f: f.mtime_s)
    total = sum(f.size for f in oldest_first)
    victims = []
    for info in oldest_first:
        if info.path in keep:
            continue
        if now_s - info.mtime_s > max_age_s or total > max_bytes:
            victims.append(info)
            total -= info.size
    return victims


def delete(victims: list[FileInfo]) -> int:
    """Unlink the files (blocking); the bytes freed."""
    freed = 0
    for info in victims:
        try:
            info.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("housekeeping_delete_failed", path=str(info.path), error=str(exc))
            continue
        freed += info.size
    return freed


def remove_empty_dirs(root: Path, victims: list[FileInfo]) -> None:
    """The directories the victims were in, and their parents up to `root`, when empty."""
    parents = {parent for v in victims for parent in v.path.parents if parent.is_relative_to(root)}
    for directory in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        if directory != root:
            with contextlib.suppress(OSError):  # not empty (or not ours): kept
                directory.rmdir()


class Housekeeper:
    """Prunes the log and state directories; `run()` until cancelled."""

    def __init__(self, settings: Settings, in_use: Callable[[], set[Path]]) -> None:
        self._interval_s = settings.housekeeping_interval_s
        self._in_use = in_use
        self.budgets = [
            Budget(
                settings.log_dir,
                LOG_PATTERNS,
                settings.log_dir_max_age_days * DAY_S,
                settings.log_dir_max_bytes,
                recursive=True,
            ),
            Budget(
                settings.state_dir,
                JOURNAL_PATTERNS,
                settings.journal_max_age_days * DAY_S,
                settings.journal_max_bytes,
                recursive=False,
            ),
        ]

    async def run(self) -> None:
        while True:
            for budget in self.budgets:
                await self.prune(budget)
            await asyncio.sleep(self._interval_s)

    async def prune(self, budget: Budget) -> int:
        """One pass over one directory; the number of files deleted."""
        try:
            files = await asyncio.to_thread(scan, budget)
        except OSError as exc:
            log.warning("housekeeping_scan_failed", dir=str(budget.root), error=str(exc))
            return 0
        # Decided in the loop: a job that starts now cannot slip in between.
        keep = self._in_use()
        victims = choose(files, keep, budget.max_age_s, budget.max_bytes, time.time())
        if not victims:
            return 0
        freed = await asyncio.to_thread(delete, victims)
        remove_empty_dirs(budget.root, victims)
        left = sum(f.size for f in files) - freed
        log.info(
            "housekeeping_pruned",
            dir=str(budget.root),
            files=len(victims),
            freed_bytes=freed,
            left_bytes=left,
        )
        if left > budget.max_bytes:
            log.warning(
                "housekeeping_over_budget",
                dir=str(budget.root),
                left_bytes=left,
                max_bytes=budget.max_bytes,
                detail="files of running jobs and held tasks are never deleted",
            )
        return len(victims)
