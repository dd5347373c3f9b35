"""The agent's reliability against the emulator: heartbeats, cancellation by the service, the
concurrency limit, drains, and the journal after a crash. Real processes, real signals."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    agent_process,
    agent_settings,
    agent_thread,
    audit_row,
    failure_of,
    finished,
    log_lines,
    make_stack,
    process_gone,
    start,
    task_input,
    wait_for,
    write_script,
)

pytestmark = pytest.mark.usefixtures("emulator")


def _log_file(settings: Any, uid: str, job: str) -> Path:
    return settings.log_dir / f"wf-{uid}" / f"exec-{uid}" / f"{job}.log"


def _pids_in(path: Path, word: str) -> list[int]:
    if not path.exists():
        return []
    return [int(t.split()[1]) for _, _, t in log_lines(path) if t.startswith(word + " ")]


def test_heartbeats_keep_a_job_alive_past_heartbeat_seconds(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid, heartbeat_s=1)
    # Control: a task nobody heartbeats times out after HeartbeatSeconds.
    control = start(aws, stack, task_input(uid, "x.sh"), f"control-{uid}")
    taken = aws.sfn.get_activity_task(activityArn=stack.activity_arn)
    assert json.loads(taken["input"])["job_name"] == "x.sh"
    assert finished(aws, control, timeout_s=10)["status"] == "FAILED"
    assert failure_of(aws, control)[0] == "States.Timeout"

    settings = agent_settings(tmp_path, stack)
    write_script(settings.script_dir, "long.sh", "sleep 2.5\necho done")
    with agent_thread(settings):
        arn = start(aws, stack, task_input(uid, "long.sh", heartbeat_seconds=1), f"exec-{uid}")
        execution = finished(aws, arn)
    assert execution["status"] == "SUCCEEDED", failure_of(aws, arn)
    assert json.loads(execution["output"])["duration_ms"] >= 2500


def test_a_task_the_service_closed_is_cancelled(aws: Any, uid: str, tmp_path: Path) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, heartbeat_interval_s=0.3)
    write_script(
        settings.script_dir, "stuck.sh", 'sleep 300 &\necho "child $!"\necho "self $$"\nwait'
    )
    log_file = _log_file(settings, uid, "stuck.sh")
    with agent_thread(settings) as agent:
        arn = start(aws, stack, task_input(uid, "stuck.sh"), f"exec-{uid}")
        pids = wait_for(lambda: _pids_in(log_file, "child") + _pids_in(log_file, "self"))
        aws.sfn.stop_execution(executionArn=arn, error="Operator.Stop", cause="test")
        row = wait_for(
            lambda: (
                (r := audit_row(aws, stack, "stuck.sh", f"exec-{uid}"))
                and r["execution_status"] == "Cancelled"
                and r
            ),
            what="the audit row to say Cancelled",
        )
        wait_for(lambda: not agent.jobs, what="the job to end")
    assert "closed the task" in row["cause"] and "error" not in row
    assert all(process_gone(pid) for pid in pids)
    assert finished(aws, arn)["status"] == "ABORTED"
    assert list(settings.state_dir.iterdir()) == []  # nothing left to report


def test_the_concurrency_limit_is_never_exceeded(aws: Any, uid: str, tmp_path: Path) -> None:
    stack = make_stack(aws, uid, map_jobs=True)
    settings = agent_settings(tmp_path, stack, concurrency=2, pollers=4)
    record = tmp_path / "intervals"
    for i in range(6):
        write_script(
            settings.script_dir,
            f"c{i}.sh",
            f'echo "start $(date +%s.%N)" >> {record}\n'
            f'sleep 0.4\necho "end $(date +%s.%N)" >> {record}',
        )
    jobs = [task_input(uid, f"c{i}.sh") for i in range(6)]
    with agent_thread(settings) as agent:
        arn = start(aws, stack, {"jobs": jobs}, f"exec-{uid}")
        assert finished(aws, arn)["status"] == "SUCCEEDED", failure_of(aws, arn)
        assert agent.jobs_started == 6
        assert agent.max_running == 2
    running = peak = 0
    events = sorted(
        (float(stamp), 1 if kind == "start" else -1)
        for kind, stamp in (line.split() for line in record.read_text().splitlines())
    )
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 2


def test_drain_lets_a_running_job_finish(aws: Any, uid: str, tmp_path: Path) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, drain_timeout_s=20)
    write_script(settings.script_dir, "short.sh", "echo begun\nsleep 1\necho finished")
    with agent_thread(settings) as agent:
        arn = start(aws, stack, task_input(uid, "short.sh"), f"exec-{uid}")
        wait_for(lambda: _log_file(settings, uid, "short.sh").exists(), what="the job to start")
        agent.request_stop()
        execution = finished(aws, arn)
    assert execution["status"] == "SUCCEEDED"
    assert audit_row(aws, stack, "short.sh", f"exec-{uid}")["execution_status"] == "Completed"


def test_drain_deadline_fails_jobs_back_and_new_tasks_too(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, drain_timeout_s=1.5, concurrency=2, pollers=1)
    write_script(settings.script_dir, "forever.sh", 'sleep 300 &\necho "child $!"\nwait')
    write_script(settings.script_dir, "late.sh", f"touch {tmp_path / 'late-ran'}")
    log_file = _log_file(settings, uid, "forever.sh")
    started = time.monotonic()
    with agent_thread(settings) as agent:
        arn = start(aws, stack, task_input(uid, "forever.sh"), f"exec-{uid}")
        [child] = wait_for(lambda: _pids_in(log_file, "child"), what="the job to start")
        # The free slot's poll is open (it began just after the first returned, far from
        # the emulator's 3 s expiry): a task it returns during the drain goes back.
        wait_for(lambda: agent.polls_started >= 2, what="the second poll")
        agent.request_stop()
        late = start(aws, stack, task_input(uid, "late.sh"), f"late-{uid}")
        assert finished(aws, late)["status"] == "FAILED"
        assert failure_of(aws, late)[0] == "Agent.ShuttingDown"
    assert time.monotonic() - started < 15
    assert finished(aws, arn)["status"] == "FAILED"
    error, cause = failure_of(aws, arn)
    assert error == "Agent.ShuttingDown" and "shutting down" in cause
    row = audit_row(aws, stack, "forever.sh", f"exec-{uid}")
    assert row["execution_status"] == "Cancelled" and row["error"] == "Agent.ShuttingDown"
    assert process_gone(child)
    assert not (tmp_path / "late-ran").exists()


def test_sigterm_drains_the_cli_agent(aws: Any, uid: str, tmp_path: Path) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, drain_timeout_s=20)
    write_script(settings.script_dir, "job.sh", "echo begun\nsleep 1\necho finished")
    process = agent_process(settings, tmp_path)
    try:
        arn = start(aws, stack, task_input(uid, "job.sh"), f"exec-{uid}")
        wait_for(lambda: _log_file(settings, uid, "job.sh").exists(), what="the job to start")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert finished(aws, arn)["status"] == "SUCCEEDED"
    lines = (tmp_path / "agent.out").read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events[0] == "agent_started" and events[-1] == "agent_stopped"
    assert "job_finished" in events


def test_after_a_crash_the_next_start_kills_orphans_and_fails_the_task_back(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack)
    write_script(settings.script_dir, "orphan.sh", 'sleep 300 &\necho "child $!"\nwait')
    log_file = _log_file(settings, uid, "orphan.sh")
    process = agent_process(settings, tmp_path)
    try:
        arn = start(aws, stack, task_input(uid, "orphan.sh"), f"exec-{uid}")
        [child] = wait_for(lambda: _pids_in(log_file, "child"), what="the job to start")
        process.kill()  # no drain, no cleanup: the script's group lives on
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert not process_gone(child)
    [entry] = list(settings.state_dir.iterdir())
    assert oct(entry.stat().st_mode & 0o777) == oct(0o600)
    with agent_thread(settings):
        execution = finished(aws, arn)
    assert process_gone(child)
    assert execution["status"] == "FAILED"
    assert failure_of(aws, arn)[0] == "Agent.ShuttingDown"
    assert audit_row(aws, stack, "orphan.sh", f"exec-{uid}")["execution_status"] == "Abandoned"
    assert list(settings.state_dir.iterdir()) == []


def test_a_second_sigint_stops_at_once_and_the_journal_remembers(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, drain_timeout_s=60)
    write_script(settings.script_dir, "long.sh", 'sleep 300 &\necho "child $!"\nwait')
    log_file = _log_file(settings, uid, "long.sh")
    process = agent_process(settings, tmp_path)
    try:
        arn = start(aws, stack, task_input(uid, "long.sh"), f"exec-{uid}")
        [child] = wait_for(lambda: _pids_in(log_file, "child"), what="the job to start")
        process.send_signal(signal.SIGINT)
        wait_for(lambda: b"agent_stopping" in (tmp_path / "agent.out").read_bytes())
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0  # long before the 60 s drain
    finally:
        if process.poll() is None:
            process.kill()
    assert process_gone(child)
    assert len(list(settings.state_dir.iterdir())) == 1  # held, never reported
    with agent_thread(settings):
        assert finished(aws, arn)["status"] == "FAILED"
    assert failure_of(aws, arn)[0] == "Agent.ShuttingDown"
