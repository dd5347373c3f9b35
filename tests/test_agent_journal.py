"""The on-disk journal of held tasks: private files, atomic updates, read back at start."""

from __future__ import annotations

import stat
from pathlib import Path

from agent import completion, errors
from agent.journal import Journal


def test_entries_are_private_and_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    journal = Journal(state)
    journal.hold("token-1")
    journal.update("token-1", job_name="a.sh", workflow_execution_id="ex", attempt=1, pgid=4242)
    journal.hold("token-2")
    journal.update("token-2", completion=completion.failure(errors.ScriptFailed("exit 3")))
    journal.hold("token-3")
    journal.remove("token-3")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = sorted(state.iterdir())
    assert len(files) == 2
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert all("token" not in f.name for f in files)  # names are hashes

    entries = {e.token: e for e in Journal(state).load()}
    assert set(entries) == {"token-1", "token-2"}
    assert (entries["token-1"].pgid, entries["token-1"].attempt) == (4242, 1)
    assert entries["token-1"].completion is None
    pending = entries["token-2"].completion
    assert pending is not None and pending.error == "RSQL.ScriptFailed"


def test_an_unreadable_entry_is_set_aside(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.hold("ok")
    (tmp_path / "broken.task.json").write_text("{not json")
    assert [e.token for e in journal.load()] == ["ok"]
    assert (tmp_path / "broken.task.bad").exists()


def test_an_update_cut_short_still_reads_as_the_new_entry(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.hold("tok")
    journal.update("tok", job_name="a-long-job-name.sh", workflow_execution_id="x" * 200)
    [path] = tmp_path.iterdir()
    old = path.read_bytes()
    journal.update("tok", workflow_execution_id="short", pgid=7)
    new = path.read_bytes()
    assert len(new) < len(old)
    # What an agent killed between the write and the truncate leaves behind.
    path.write_bytes(new + old[len(new) :])
    [entry] = Journal(tmp_path).load()
    assert (entry.workflow_execution_id, entry.pgid) == ("short", 7)
