"""Housekeeping: local job logs and the journal pruned by age and total size, never a file a
running job writes. Real files; the last test with a real agent and a running job."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    agent_settings,
    agent_thread,
    finished,
    make_stack,
    start,
    task_input,
    wait_for,
    write_script,
)

from agent.housekeeping import DAY_S, Budget, FileInfo, Housekeeper, choose
from agent.settings import Settings

NOW = 1_800_000_000.0


def _info(name: str, age_days: float, size: int) -> FileInfo:
    return FileInfo(Path(name), NOW - age_days * DAY_S, size)


def test_old_files_go_then_the_oldest_until_the_rest_fits() -> None:
    files = [_info("new", 0, 300), _info("old", 20, 10), _info("mid", 5, 500), _info("x", 1, 400)]
    by_age = choose(files, set(), 14 * DAY_S, 10_000, NOW)
    assert [f.path.name for f in by_age] == ["old"]
    by_size = choose(files, set(), 14 * DAY_S, 800, NOW)
    assert [f.path.name for f in by_size] == ["old", "mid"]  # oldest first, until 700 B fit
    kept = choose(files, {Path("old"), Path("mid")}, 14 * DAY_S, 800, NOW)
    assert [f.path.name for f in kept] == ["x", "new"]  # in-use files take room, never go
    assert choose([], set(), 1, 1, NOW) == []


def _file(path: Path, size: int, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    moment = time.time() - age_days * DAY_S
    os.utime(path, (moment, moment))
    return path


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    (tmp_path / "scripts").mkdir(exist_ok=True)
    return Settings.load(
        activity_arn="arn:aws:states:us-east-1:123456789012:activity:rsql-jobs",
        script_dir=tmp_path / "scripts",
        log_dir=tmp_path / "logs",
        state_dir=tmp_path / "state",
        **overrides,
    )


def test_a_pass_prunes_logs_and_journal_files_and_empty_directories(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, log_dir_max_age_days=14, log_dir_max_bytes=5000, journal_max_age_days=7
    )
    logs = settings.log_dir
    old = _file(logs / "wf" / "exec-1" / "a.log", 100, 30)
    big_old = _file(logs / "wf" / "exec-2" / "b.log", 4000, 3)
    big_new = _file(logs / "wf" / "exec-3" / "c.log", 4000, 1)
    in_use = _file(logs / "wf" / "exec-4" / "d.log", 100, 40)
    not_a_log = _file(logs / "wf" / "exec-1" / "notes.txt", 100, 40)
    outside = _file(tmp_path / "elsewhere.log", 100, 40)
    (logs / "wf" / "exec-5").mkdir()
    (logs / "wf" / "exec-5" / "link.log").symlink_to(outside)
    state = settings.state_dir
    stale = _file(state / "0123.task.json", 200, 10)
    bad = _file(state / "set-aside" / "0456.task.json.1795900000000000000", 200, 10)
    held = _file(state / "0789.task.json", 200, 10)
    fresh = _file(state / "0abc.task.json", 200, 0)

    housekeeper = Housekeeper(settings, lambda: {in_use, held})
    log_budget, journal_budget = housekeeper.budgets
    assert isinstance(log_budget, Budget) and journal_budget.root == state
    assert asyncio.run(housekeeper.prune(log_budget)) == 2
    assert asyncio.run(housekeeper.prune(journal_budget)) == 2
    assert not old.exists() and not big_old.exists()
    assert big_new.exists() and in_use.exists() and not_a_log.exists()
    assert not (logs / "wf" / "exec-2").exists()  # left empty: removed
    assert (logs / "wf" / "exec-1").exists()  # notes.txt is not ours to delete
    assert outside.exists() and (logs / "wf" / "exec-5" / "link.log").is_symlink()
    assert not stale.exists() and not bad.exists() and held.exists() and fresh.exists()
    # Nothing left to do: a second pass deletes nothing.
    assert asyncio.run(housekeeper.prune(log_budget)) == 0


@pytest.mark.usefixtures("emulator")
def test_a_running_jobs_log_and_journal_entry_survive_every_pass(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(
        tmp_path,
        stack,
        housekeeping_interval_s=0.2,
        log_dir_max_bytes=2048,
        log_dir_max_age_days=1,
        journal_max_age_days=1,
    )
    release = tmp_path / "release"
    write_script(
        settings.script_dir,
        "long.sh",
        f"echo begun\nhead -c 8192 /dev/zero | tr '\\0' x\necho\n"
        f"while [ ! -e {release} ]; do sleep 0.05; done\necho done",
    )
    log_file = settings.log_dir / f"wf-{uid}" / f"exec-{uid}" / "long.sh.log"
    with agent_thread(settings):
        arn = start(aws, stack, task_input(uid, "long.sh"), f"exec-{uid}")
        wait_for(lambda: log_file.exists() and log_file.stat().st_size > 8192, what="output")
        [entry] = list(settings.state_dir.glob("*.task.json"))
        month_ago = time.time() - 30 * DAY_S
        for path in (log_file, entry):  # old and over budget: only being in use saves them
            os.utime(path, (month_ago, month_ago))
        # Sentinels: once they are gone, a pass has run since the job's files aged.
        sentinel = _file(settings.log_dir / "wf-old" / "exec-old" / "old.log", 10, 30)
        stale = _file(settings.state_dir / "set-aside" / "stale.task.json.1", 10, 30)
        wait_for(lambda: not sentinel.exists() and not stale.exists(), 30, "a housekeeping pass")
        assert log_file.exists() and entry.exists()
        assert not (settings.log_dir / "wf-old").exists()
        release.touch()
        assert finished(aws, arn)["status"] == "SUCCEEDED"
