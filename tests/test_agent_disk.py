"""2. The script is never blocked by the agent: the local log directory on a real 1 MB tmpfs
that fills up, a log directory that cannot be created, a read-only filesystem.

Mounting needs root (the tests skip without it). Permissions cannot be shown as root (root
writes through mode bits), so a read-only remount (EROFS) stands for "not allowed to write".
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    AgentProcess,
    agent_process,
    agent_settings,
    audit_row,
    failure_of,
    finished,
    journal_entries,
    log_messages,
    make_stack,
    start,
    task_input,
    wait_for,
    write_script,
)

pytestmark = pytest.mark.usefixtures("emulator")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs, unmounted after the test."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _unwritable_warnings(agent: AgentProcess) -> list[dict[str, Any]]:
    return [e for e in agent.events() if e["event"] == "local_log_unwritable"]


def test_a_full_disk_never_blocks_the_script_and_cloudwatch_gets_every_line(
    aws: Any, uid: str, tmp_path: Path, small_disk: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, log_dir=small_disk / "logs")
    # 2 MB of output onto a 1 MB disk: the disk fills up part-way through.
    write_script(
        settings.script_dir,
        "big.sh",
        "awk 'BEGIN { for (i = 1; i <= 20000; i++) printf \"line %05d %080d\\n\", i, 0 }'\n"
        "echo done",
    )
    with agent_process(settings, tmp_path) as agent:
        arn = start(aws, stack, task_input(uid, "big.sh"), f"exec-{uid}")
        execution = finished(aws, arn, timeout_s=60)
        wait_for(lambda: not journal_entries(settings.state_dir), 60, "every line to ship")
        [warning] = _unwritable_warnings(agent)
    assert execution["status"] == "SUCCEEDED", failure_of(aws, arn)
    assert "No space left on device" in warning["error"]
    events = [e["event"] for e in agent.events()]
    assert events.index("local_log_unwritable") < events.index("job_finished")
    stream = f"wf-{uid}/exec-{uid}/big.sh"
    expected = [f"line {i:05d} {0:080d}" for i in range(1, 20001)] + ["done"]
    assert _all_messages(aws, stack, stream) == expected
    row = audit_row(aws, stack, "big.sh", f"exec-{uid}")
    assert row["execution_status"] == "Completed"
    assert "local log file is incomplete: No space left on device" in row["cause"]


def _all_messages(aws: Any, stack: Any, stream: str) -> list[str]:
    messages: list[str] = []
    kwargs: dict[str, Any] = {"startFromHead": True}
    while True:
        page = aws.logs.get_log_events(logGroupName=stack.log_group, logStreamName=stream, **kwargs)
        messages += [e["message"] for e in page["events"]]
        if not page["events"]:
            return messages
        kwargs["nextToken"] = page["nextForwardToken"]


def test_a_log_directory_that_cannot_be_created_fails_nothing_but_the_local_copy(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack)
    write_script(settings.script_dir, "fails.sh", 'echo "before the end"\nexit 3')
    # Where the job's directory belongs there is a file: the log cannot be created.
    (settings.log_dir / f"wf-{uid}").parent.mkdir(parents=True, exist_ok=True)
    (settings.log_dir / f"wf-{uid}").write_text("not a directory")
    with agent_process(settings, tmp_path) as agent:
        arn = start(aws, stack, task_input(uid, "fails.sh"), f"exec-{uid}")
        assert finished(aws, arn)["status"] == "FAILED"
        [warning] = _unwritable_warnings(agent)
    assert "Not a directory" in warning["error"]
    error, cause = failure_of(aws, arn)
    # The job ends the way the script ended, and says the local copy is missing.
    assert error == "RSQL.ScriptFailed"
    assert "failed with exit code 3" in cause and "local log file is incomplete" in cause
    assert "before the end" in cause
    assert log_messages(aws, stack, f"wf-{uid}/exec-{uid}/fails.sh") == ["before the end"]


def test_a_read_only_log_filesystem_fails_nothing_but_the_local_copy(
    aws: Any, uid: str, tmp_path: Path, small_disk: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, log_dir=small_disk / "logs")
    write_script(settings.script_dir, "ok.sh", "echo one\necho two")
    with agent_process(settings, tmp_path) as agent:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        arn = start(aws, stack, task_input(uid, "ok.sh"), f"exec-{uid}")
        assert finished(aws, arn)["status"] == "SUCCEEDED"
        [warning] = _unwritable_warnings(agent)
    assert "Read-only file system" in warning["error"]
    assert log_messages(aws, stack, f"wf-{uid}/exec-{uid}/ok.sh") == ["one", "two"]
