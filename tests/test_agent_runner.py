"""The runner: script resolution, environment, process groups, timeouts, output pumping.
Real subprocesses and real signals."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest
from agent_helpers import log_lines, process_gone, write_script

from agent import errors
from agent.outcome import exit_sentence
from agent.output import OutputLog
from agent.runner import (
    ScriptResult,
    job_env,
    log_file_path,
    resolve_script,
    run_script,
)

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# -- resolving the script ---------------------------------------------------------------


@pytest.fixture
def script_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "scripts"
    directory.mkdir()
    return directory.resolve()


def test_resolves_a_script_and_one_in_a_subdirectory(script_dir: Path) -> None:
    top = write_script(script_dir, "a.sh", "true")
    nested = write_script(script_dir, "etl/b.sh", "true")
    assert resolve_script(script_dir, "a.sh") == top
    assert resolve_script(script_dir, "etl/b.sh") == nested


def test_symlink_that_stays_inside_is_fine(script_dir: Path) -> None:
    target = write_script(script_dir, "real.sh", "true")
    (script_dir / "alias.sh").symlink_to(target)
    assert resolve_script(script_dir, "alias.sh") == target


@pytest.mark.parametrize("name", ["../x.sh", "etl/../../x.sh", "/etc/passwd", "", "a\x00b"])
def test_names_that_escape_are_invalid_input(script_dir: Path, name: str) -> None:
    write_script(script_dir.parent, "x.sh", "true")
    with pytest.raises(errors.InvalidInput):
        resolve_script(script_dir, name)


def test_symlink_escaping_the_directory_is_invalid_input(script_dir: Path) -> None:
    outside = write_script(script_dir.parent, "outside.sh", "true")
    (script_dir / "evil.sh").symlink_to(outside)
    (script_dir / "evil_dir").symlink_to(script_dir.parent)
    with pytest.raises(errors.InvalidInput, match="outside"):
        resolve_script(script_dir, "evil.sh")
    with pytest.raises(errors.InvalidInput, match="outside"):
        resolve_script(script_dir, "evil_dir/outside.sh")


def test_missing_or_not_regular_is_script_not_found(script_dir: Path) -> None:
    (script_dir / "dir.sh").mkdir()
    with pytest.raises(errors.ScriptNotFound, match="does not exist"):
        resolve_script(script_dir, "nope.sh")
    with pytest.raises(errors.ScriptNotFound, match="not a regular file"):
        resolve_script(script_dir, "dir.sh")


def test_log_file_path_is_safe(tmp_path: Path) -> None:
    path = log_file_path(tmp_path, "wf/../x", "..exec", "etl/a.sh", 2)
    assert path.is_relative_to(tmp_path)
    assert path.relative_to(tmp_path).parts == ("wf_.._x", "_.exec", "etl_a.sh.2.log")


def test_job_env_layers() -> None:
    env = job_env({"PATH": "/bin", "PGHOST": "old"}, {"PGHOST": "db"}, "wf", "ex-1", "a.sh")
    assert env == {
        "PATH": "/bin",
        "PGHOST": "db",
        "RSQL_WORKFLOW_ID": "wf",
        "RSQL_WORKFLOW_EXECUTION_ID": "ex-1",
        "RSQL_JOB_NAME": "a.sh",
    }


# -- output -------------------------------------------------------------------------------


def test_output_log_splits_lines_across_chunks_and_caps_long_ones(tmp_path: Path) -> None:
    async def feed() -> OutputLog:
        output = OutputLog(
            tmp_path / "o.log", max_line_bytes=1024, tail_lines=3, spool_max_bytes=1 << 20
        )
        output.feed(b"out", b"ab")
        output.feed(b"err", b"warn\r\n")
        output.feed(b"out", b"c\nde")
        output.feed(b"out", b"f\n\n" + b"x" * 2500)
        output.end(b"out")
        output.close()
        return output

    output = asyncio.run(feed())
    lines = log_lines(output.path)
    assert [(s, t) for _, s, t in lines] == [
        ("err", "warn"),
        ("out", "abc"),
        ("out", "def"),
        ("out", ""),
        ("out", "x" * 1024),
        ("out", "x" * 1024),
        ("out", "x" * 452),
    ]
    assert all(ISO.match(ts) for ts, _, _ in lines)
    assert output.tail().split("\n") == ["x" * 1000, "x" * 1000, "x" * 452]
    assert output.wake.is_set()
    assert oct(output.path.stat().st_mode & 0o777) == oct(0o640)


def test_a_long_line_inside_a_chunk_is_cut_at_the_cap(tmp_path: Path) -> None:
    async def feed() -> OutputLog:
        output = OutputLog(tmp_path / "o.log", max_line_bytes=1024, tail_lines=0, spool_max_bytes=0)
        output.feed(b"out", b"a\n" + b"y" * 1500 + b"\nb\n")
        output.close()
        return output

    lines = log_lines(asyncio.run(feed()).path)
    assert [t for _, _, t in lines] == ["a", "y" * 1024, "y" * 476, "b"]


# -- running --------------------------------------------------------------------------------


def _run(
    tmp_path: Path,
    body: str,
    *,
    timeout_s: float = 30,
    grace_s: float = 2,
    env: dict[str, str] | None = None,
    cancel_after_line: str | None = None,
) -> tuple[ScriptResult, Path, list[int]]:
    script = write_script(tmp_path, "job.sh", body)
    spawned: list[int] = []

    async def go() -> ScriptResult:
        output = OutputLog(
            tmp_path / "job.log", max_line_bytes=256 * 1024, tail_lines=20, spool_max_bytes=1 << 20
        )
        cancel = asyncio.Event()
        if cancel_after_line:
            asyncio.get_running_loop().create_task(_cancel_on(output, cancel_after_line, cancel))
        try:
            return await run_script(
                ["/bin/bash", str(script)],
                cwd=tmp_path,
                env=env or {"PATH": os.environ["PATH"]},
                output=output,
                timeout_s=timeout_s,
                cancel=cancel,
                kill_grace_s=grace_s,
                on_spawn=spawned.append,
            )
        finally:
            output.close()

    return asyncio.run(go()), tmp_path / "job.log", spawned


async def _cancel_on(output: OutputLog, text: str, cancel: asyncio.Event) -> None:
    while text not in output.path.read_text():
        await output.wake.wait()
        output.wake.clear()
    cancel.set()


def _pids(log: Path, word: str) -> list[int]:
    return [int(t.split()[1]) for _, _, t in log_lines(log) if t.startswith(word + " ")]


def test_exit_code_output_and_environment(tmp_path: Path) -> None:
    result, log, spawned = _run(
        tmp_path,
        """
        echo "hello $RSQL_JOB_NAME"
        echo "to stderr" >&2
        read -r line; echo "stdin read status $?"
        echo "pgid $(ps -o pgid= $$ | tr -d ' ') pid $$"
        exit 3
        """,
        env={"PATH": os.environ["PATH"], "RSQL_JOB_NAME": "job.sh"},
    )
    assert result.exit_code == 3 and not result.timed_out and not result.cancelled
    assert exit_sentence(result.exit_code, result.signal_name) == "exit code 3"
    texts = [t for _, _, t in log_lines(log)]
    assert "hello job.sh" in texts
    assert ("err", "to stderr") in [(s, t) for _, s, t in log_lines(log)]
    assert "stdin read status 1" in texts  # stdin is /dev/null: EOF at once
    pgid_line = next(t for t in texts if t.startswith("pgid "))
    _, pgid, _, pid = pgid_line.split()
    assert int(pgid) == int(pid) == spawned[0]  # its own process group, led by the script


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    started = time.monotonic()
    result, log, _ = _run(
        tmp_path,
        """
        sleep 300 &
        echo "child $!"
        bash -c 'sleep 300 & echo "grandchild $!"; wait'
        """,
        timeout_s=1.0,
    )
    assert result.timed_out and not result.cancelled
    assert result.signal_name == "SIGTERM" and result.exit_code == 143
    assert exit_sentence(result.exit_code, result.signal_name) == "exit code 143, killed by SIGTERM"
    assert time.monotonic() - started < 10
    pids = _pids(log, "child") + _pids(log, "grandchild")
    assert len(pids) == 2
    assert all(process_gone(pid) for pid in pids)


def test_sigterm_ignored_means_sigkill_after_grace(tmp_path: Path) -> None:
    result, _, _ = _run(
        tmp_path,
        "trap '' TERM\necho ready\nwhile true; do sleep 0.1; done",
        timeout_s=0.5,
        grace_s=0.5,
    )
    assert result.timed_out
    assert result.signal_name == "SIGKILL" and result.exit_code == 137


def test_cancel_stops_the_script(tmp_path: Path) -> None:
    result, log, _ = _run(
        tmp_path, 'echo started\nsleep 300 &\necho "child $!"\nwait', cancel_after_line="child"
    )
    assert result.cancelled and not result.timed_out
    assert all(process_gone(pid) for pid in _pids(log, "child"))


def test_background_leftovers_end_with_the_script(tmp_path: Path) -> None:
    result, log, _ = _run(
        tmp_path, 'sleep 300 >/dev/null 2>&1 &\necho "child $!"\nexit 0', grace_s=1
    )
    assert result.exit_code == 0
    [pid] = _pids(log, "child")
    assert process_gone(pid)


def test_heavy_output_is_written_in_full(tmp_path: Path) -> None:
    # 200,000 lines and one 600 KB line without a newline in between.
    result, log, _ = _run(
        tmp_path,
        """
        seq 1 200000
        head -c 600000 /dev/zero | tr '\\0' 'a'
        echo
        echo done
        """,
    )
    assert result.exit_code == 0
    lines = log_lines(log)
    texts = [t for _, _, t in lines]
    assert texts[:3] == ["1", "2", "3"] and texts[199_999] == "200000"
    assert [len(t) for t in texts[200_000:203_000]] == [262144, 262144, 75712, 4]
    assert texts[-1] == "done"
