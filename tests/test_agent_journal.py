"""The on-disk journal of what the agent owes: private files, atomic updates, read back at
start; anything else in the state directory is set aside and the agent starts."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from agent_helpers import (
    agent_settings,
    agent_thread,
    finished,
    make_stack,
    start,
    task_input,
    write_script,
)

from agent import errors
from agent.journal import SET_ASIDE_DIR, Journal, Shipping
from agent.outcome import failure


def test_entries_are_private_and_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    journal = Journal(state)
    journal.hold("token-1")
    journal.update("token-1", task_input='{"job_name": "a.sh"}', attempt=1, pgid=4242)
    journal.hold("token-2")
    journal.update("token-2", completion=failure(errors.ScriptFailed("exit 3")))
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


def test_an_update_cut_short_still_reads_as_the_new_entry(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.hold("tok")
    journal.update("tok", task_input="x" * 200, log_stream="a-long-job-name.sh")
    [path] = tmp_path.iterdir()
    old = path.read_bytes()
    journal.update("tok", task_input="short", pgid=7)
    new = path.read_bytes()
    assert len(new) < len(old)
    # What an agent killed between the write and the truncate leaves behind.
    path.write_bytes(new + old[len(new) :])
    [entry] = Journal(tmp_path).load()
    assert (entry.task_input, entry.pgid) == ("short", 7)


def test_an_entry_is_removed_once_reported_and_shipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.hold("tok")
    journal.update("tok", shipping=Shipping(log_group="g", log_stream="s", path="/x"))
    journal.update("tok", reported=True)
    assert len(list(tmp_path.iterdir())) == 1  # its log is still owed
    entry = journal.get("tok")
    assert entry is not None and entry.shipping is not None
    entry.shipping.done = True
    journal.update("tok")
    assert list(tmp_path.iterdir()) == []


# -- 3. anything in the state directory is set aside; the agent starts --------------------

_NOT_ENTRIES: dict[str, bytes] = {
    "empty": b"",
    "bytes": bytes(range(256)) * 4,
    "truncated": b'{"token": "abc", "pgid": 4',
    "null": b"null",
    "number": b"42",
    "string": b'"abc"',
    "list": b'["token"]',
    "token-not-a-string": b'{"token": 7}',
    "no-token": b'{"pgid": 1234}',
    "pgid-of-init": b'{"token": "t", "pgid": 1}',
    "pgid-a-string": b'{"token": "t", "pgid": "1234"}',
    "bad-completion": b'{"token": "t", "completion": {"kind": "maybe"}}',
    "bad-shipping": b'{"token": "t", "shipping": {"offset": -1}}',
    "deep": b"[" * 100_000,
}


def _plant_garbage(state: Path) -> list[str]:
    """Every kind of thing a state directory may hold that is not an entry."""
    state.mkdir(parents=True, exist_ok=True)
    names = []
    for what, data in _NOT_ENTRIES.items():
        (state / f"{what}.task.json").write_bytes(data)
        names.append(f"{what}.task.json")
    (state / "a-directory.task.json").mkdir()
    os.mkfifo(state / "a-fifo.task.json")  # opening it for reading would block for ever
    (state / "to-dev-zero.task.json").symlink_to("/dev/zero")  # reading it never ends
    (state / "dangling.task.json").symlink_to(state / "nowhere")
    (state / "stray-file.txt").write_text("not the agent's")
    # A valid entry under a name that is not its token's: copied from elsewhere.
    valid = Journal(state.parent / "elsewhere")
    valid.hold("someone-elses")
    [copied] = (state.parent / "elsewhere").iterdir()
    (state / "0000.task.json").write_bytes(copied.read_bytes())
    return [
        *names,
        "a-directory.task.json",
        "a-fifo.task.json",
        "to-dev-zero.task.json",
        "dangling.task.json",
        "stray-file.txt",
        "0000.task.json",
    ]


def test_anything_that_is_not_an_entry_is_set_aside_with_a_warning(tmp_path: Path) -> None:
    # Files that cannot be read: as root, mode bits do not stop a read, so a FIFO, a dangling
    # symlink and a symlink to /dev/zero stand for them.
    state = tmp_path / "state"
    planted = _plant_garbage(state)
    journal = Journal(state)
    before = set(state.iterdir())
    journal.hold("good")
    [good] = set(state.iterdir()) - before
    with structlog.testing.capture_logs() as logged:
        entries = Journal(state).load()
    assert [e.token for e in entries] == ["good"]
    assert sorted(p.name for p in state.iterdir()) == sorted([SET_ASIDE_DIR, good.name])
    aside = [p.name.rsplit(".", 1)[0] for p in (state / SET_ASIDE_DIR).iterdir()]
    assert sorted(aside) == sorted(planted)
    warnings = [e for e in logged if e["event"] == "journal_entry_set_aside"]
    assert len(warnings) == len(planted)
    assert all(e["log_level"] == "warning" for e in warnings)


@pytest.mark.usefixtures("emulator")
def test_an_agent_starts_whatever_its_state_directory_holds(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack)
    planted = _plant_garbage(settings.state_dir)
    write_script(settings.script_dir, "ok.sh", "echo fine")
    with agent_thread(settings):
        arn = start(aws, stack, task_input(uid, "ok.sh"), f"exec-{uid}")
        assert finished(aws, arn)["status"] == "SUCCEEDED"
    assert [p.name for p in settings.state_dir.iterdir()] == [SET_ASIDE_DIR]
    assert len(list((settings.state_dir / SET_ASIDE_DIR).iterdir())) == len(planted)
