"""Helpers shared by the agent's tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def write_script(script_dir: Path, name: str, body: str) -> Path:
    """A bash script under `script_dir` (the agent runs it with the shell, no +x needed)."""
    path = script_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("set -u\n" + body.strip() + "\n")
    return path


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # The state letter follows the command name in parentheses.
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def wait_for(predicate: Callable[[], T], timeout_s: float = 10.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def log_lines(path: Path) -> list[tuple[str, str, str]]:
    """(timestamp, stream, text) of each line of a job's local log file."""
    rows = []
    for line in path.read_bytes().decode().split("\n")[:-1]:
        timestamp, stream, text = line[:24], line[25:28], line[29:]
        rows.append((timestamp, stream, text))
    return rows
