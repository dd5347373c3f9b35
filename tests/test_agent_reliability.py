"""The agent's reliability against the emulator: heartbeats, cancellation by the service, the
concurrency limit, drains, and the journal after a crash. Real processes, real signals."""

from __future__ import annotations

import json
import os
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
    journal_entries,
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
    # HeartbeatSeconds 3: the agent fences a job whose first beat has not got through 1.5 s
    # after the task was handed out (heartbeat.fence_after_s); at 1 s that fence is 0.5 s,
    # which the job's own start (audit row, log stream) can take on a loaded machine.
    stack = make_stack(aws, uid, heartbeat_s=3)
    # Control: a task nobody heartbeats times out after HeartbeatSeconds.
    control = start(aws, stack, task_input(uid, "x.sh"), f"control-{uid}")
    taken = aws.sfn.get_activity_task(activityArn=stack.activity_arn)
    assert json.loads(taken["input"])["job_name"] == "x.sh"
    assert finished(aws, control, timeout_s=10)["status"] == "FAILED"
    assert failure_of(aws, control)[0] == "States.Timeout"

    settings = agent_settings(tmp_path, stack)
    write_script(settings.script_dir, "long.sh", "sleep 7\necho done")
    with agent_thread(settings):
        arn = start(aws, stack, task_input(uid, "long.sh", heartbeat_seconds=3), f"exec-{uid}")
        execution = finished(aws, arn)
    assert execution["status"] == "SUCCEEDED", failure_of(aws, arn)
    assert json.loads(execution["output"])["duration_ms"] >= 7000


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
    with agent_process(settings, tmp_path) as agent:
        arn = start(aws, stack, task_input(uid, "job.sh"), f"exec-{uid}")
        wait_for(lambda: _log_file(settings, uid, "job.sh").exists(), what="the job to start")
        assert agent.stop() == 0
    assert finished(aws, arn)["status"] == "SUCCEEDED"
    events = [e["event"] for e in agent.events()]
    assert events[0] == "agent_started" and events[-1] == "agent_stopped"
    assert "job_finished" in events


# -- 4. a stop hands work back at once ------------------------------------------------------


def test_a_stopping_agent_fails_back_what_its_open_polls_bring_at_once(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    retry = [{"ErrorEquals": ["Agent.ShuttingDown"], "IntervalSeconds": 1, "MaxAttempts": 3}]
    stack = make_stack(aws, uid, heartbeat_s=30, retry=retry, map_jobs=True)
    settings = agent_settings(tmp_path / "a", stack, pollers=2, drain_timeout_s=30)
    write_script(settings.script_dir, "j.sh", "echo ran on $RSQL_JOB_NAME")
    jobs = [task_input(uid, "j.sh", heartbeat_seconds=30) for _ in range(2)]
    started = time.monotonic()
    with agent_thread(settings, wait_for_polls=True) as draining:
        # A poll that has just begun stays open for the emulator's 3 s: stop, then start
        # the run, so the tasks arrive while the agent drains.
        polls = draining.polls_started
        wait_for(lambda: draining.polls_started > polls, what="a fresh poll")
        draining.request_stop()
        arn = start(aws, stack, {"jobs": jobs}, f"exec-{uid}")
        wait_for(lambda: not draining.ready.is_set() or _failed_back(aws, arn) >= 1)
    stopped_s = time.monotonic() - started
    assert _failed_back(aws, arn) >= 1  # what the open polls brought went straight back
    assert stopped_s < 10  # the polls' return, not the 30 s drain deadline
    assert not list(settings.state_dir.glob("*.task.json"))
    other = agent_settings(tmp_path / "b", stack)
    write_script(other.script_dir, "j.sh", "echo ran on $RSQL_JOB_NAME")
    with agent_thread(other):
        execution = finished(aws, arn, timeout_s=20)
    assert execution["status"] == "SUCCEEDED"
    # Not a heartbeat timeout (30 s) later: at once, on the other host.
    assert (execution["stopDate"] - execution["startDate"]).total_seconds() < 20


def _failed_back(aws: Any, execution_arn: str) -> int:
    events = aws.sfn.get_execution_history(executionArn=execution_arn)["events"]
    return sum(
        1
        for e in events
        if e.get("activityFailedEventDetails", {}).get("error") == "Agent.ShuttingDown"
    )


def test_a_second_sigterm_stops_at_once_and_the_journal_remembers(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, drain_timeout_s=60)
    write_script(settings.script_dir, "long.sh", 'sleep 300 &\necho "child $!"\nwait')
    log_file = _log_file(settings, uid, "long.sh")
    with agent_process(settings, tmp_path) as agent:
        arn = start(aws, stack, task_input(uid, "long.sh"), f"exec-{uid}")
        [child] = wait_for(lambda: _pids_in(log_file, "child"), what="the job to start")
        agent.popen.send_signal(signal.SIGTERM)
        agent.wait_for_event("agent_stopping")
        agent.popen.send_signal(signal.SIGTERM)
        assert agent.popen.wait(timeout=10) == 0  # long before the 60 s drain
    assert process_gone(child)
    assert len(journal_entries(settings.state_dir)) == 1  # held, never reported
    with agent_thread(settings):
        assert finished(aws, arn)["status"] == "FAILED"
    assert failure_of(aws, arn)[0] == "Agent.ShuttingDown"


# -- 5. when the agent dies, its scripts die with it --------------------------------------


def test_a_killed_agents_scripts_die_within_a_second_and_the_task_goes_back(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack)
    write_script(
        settings.script_dir, "orphan.sh", 'sleep 300 &\necho "child $!"\necho "self $$"\nwait'
    )
    log_file = _log_file(settings, uid, "orphan.sh")
    with agent_process(settings, tmp_path) as agent:
        arn = start(aws, stack, task_input(uid, "orphan.sh"), f"exec-{uid}")
        pids = wait_for(
            lambda: len(p := _pids_in(log_file, "child") + _pids_in(log_file, "self")) == 2 and p
        )
        agent.kill()  # no drain, no clean-up
        killed = time.monotonic()
        wait_for(lambda: all(process_gone(p) for p in pids), 5, "the scripts to die")
    assert time.monotonic() - killed < 1.0
    [entry] = list(settings.state_dir.glob("*.task.json"))
    assert oct(entry.stat().st_mode & 0o777) == oct(0o600)
    with agent_thread(settings):
        execution = finished(aws, arn)
    assert execution["status"] == "FAILED"
    assert failure_of(aws, arn)[0] == "Agent.ShuttingDown"
    assert audit_row(aws, stack, "orphan.sh", f"exec-{uid}")["execution_status"] == "Abandoned"
    assert not list(settings.state_dir.glob("*.task.json"))


def test_the_next_start_kills_orphans_when_the_reaper_died_too(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack)
    write_script(settings.script_dir, "orphan.sh", 'sleep 300 &\necho "child $!"\nwait')
    log_file = _log_file(settings, uid, "orphan.sh")
    with agent_process(settings, tmp_path) as agent:
        [reaper] = [e["reaper_pid"] for e in agent.events() if e["event"] == "agent_started"]
        arn = start(aws, stack, task_input(uid, "orphan.sh"), f"exec-{uid}")
        [child] = wait_for(lambda: _pids_in(log_file, "child"), what="the job to start")
        os.kill(reaper, signal.SIGKILL)
        wait_for(lambda: process_gone(reaper))
        agent.kill()
    assert not process_gone(child)  # nobody was left to end it
    with agent_thread(settings):
        assert finished(aws, arn)["status"] == "FAILED"
        assert process_gone(child)
    assert failure_of(aws, arn)[0] == "Agent.ShuttingDown"
