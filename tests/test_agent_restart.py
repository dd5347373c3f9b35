"""6. A finished script is reported, not re-run; and a host cut off from the service stops its
script before the service retries the job elsewhere (no job on two hosts at once).

Real agent processes behind a FaultProxy, real kill -9, the emulator's real heartbeat timeouts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    FAST_FAILING,
    agent_process,
    agent_settings,
    agent_thread,
    audit_row,
    emulator_port,
    failure_of,
    finished,
    journal_entries,
    log_messages,
    make_stack,
    process_gone,
    start,
    task_input,
    wait_for,
    write_script,
)

from cloud.emulator.faultproxy import FaultProxy

pytestmark = pytest.mark.usefixtures("emulator")


def test_a_script_that_ended_before_a_kill_is_reported_not_run_again(
    aws: Any, emulator: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, **FAST_FAILING)
    runs, go = tmp_path / "runs", tmp_path / "go"
    write_script(
        settings.script_dir,
        "once.sh",
        f"""
        echo "run $$" >> {runs}
        echo "loading"
        while [ ! -e {go} ]; do sleep 0.05; done
        echo "loaded"
        exit 0
        """,
    )
    with FaultProxy(emulator_port(emulator)) as proxy:
        agent = agent_process(settings, tmp_path, endpoint_url=proxy.endpoint_url)
        with agent:
            arn = start(aws, stack, task_input(uid, "once.sh", heartbeat_seconds=30), f"exec-{uid}")
            wait_for(lambda: runs.exists(), what="the script to start")
            # "loading" is in CloudWatch and the agent knows it (cut before its answer, the
            # batch would be owed again and shipped twice: the documented repeat).
            wait_for(lambda: _shipped(settings.state_dir), what="the first line shipped")
            proxy.cut()  # nothing the agent sends now arrives
            go.touch()
            wait_for(lambda: any(e["script_end"] for e in journal_entries(settings.state_dir)))
            agent.kill()  # the script ended; its report never left the host
    [entry] = journal_entries(settings.state_dir)
    assert entry["script_end"]["exit_code"] == 0 and entry["completion"] is None
    with agent_thread(settings):
        execution = finished(aws, arn)
        wait_for(lambda: not journal_entries(settings.state_dir), what="the log to ship")
    assert execution["status"] == "SUCCEEDED", failure_of(aws, arn)
    assert len(runs.read_text().splitlines()) == 1  # it ran once
    output = json.loads(execution["output"])
    assert output["status"] == "Completed"
    assert output["duration_ms"] == int(entry["script_end"]["duration_s"] * 1000)
    row = audit_row(aws, stack, "once.sh", f"exec-{uid}")
    assert row["execution_status"] == "Completed" and row["attempt"] == 1
    assert log_messages(aws, stack, f"wf-{uid}/exec-{uid}/once.sh") == ["loading", "loaded"]


def test_a_host_cut_off_stops_its_script_before_the_service_retries_it_elsewhere(
    aws: Any, emulator: Any, uid: str, tmp_path: Path
) -> None:
    retry = [{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 1, "MaxAttempts": 2}]
    stack = make_stack(aws, uid, heartbeat_s=6, retry=retry)
    record = tmp_path / "record"
    # Each host has its own script directory: `cut-off/...` or `elsewhere/...`.
    body = f"""
        host=$(basename "$(dirname "$(dirname "$0")")")
        echo "start $$ $(date +%s.%N) $host" >> {record}
        if [ "$host" = cut-off ]; then sleep 300; fi
        echo "end $$ $(date +%s.%N) $host" >> {record}
        """
    isolated = agent_settings(tmp_path / "cut-off", stack, **FAST_FAILING)
    write_script(isolated.script_dir, "job.sh", body)
    with FaultProxy(emulator_port(emulator)) as proxy:
        agent = agent_process(isolated, tmp_path, endpoint_url=proxy.endpoint_url)
        with agent:
            arn = start(aws, stack, task_input(uid, "job.sh", heartbeat_seconds=6), f"exec-{uid}")
            [(_, pid, _, _)] = wait_for(lambda: _starts(record), what="the first run")
            proxy.cut()
            cut_at = time.monotonic()
            wait_for(lambda: process_gone(int(pid)), 15, "the fence to stop the script")
            stopped_s, gone_at = time.monotonic() - cut_at, time.time()
            other = agent_settings(tmp_path / "elsewhere", stack)
            write_script(other.script_dir, "job.sh", body)
            with agent_thread(other):
                execution = finished(aws, arn, timeout_s=30)
            proxy.restore()
            agent.wait_for_event("aws_reachable_again")
    assert execution["status"] == "SUCCEEDED", failure_of(aws, arn)
    # HeartbeatSeconds 6, kill grace 0.5: stopped about 4.5 s after the last beat got through.
    assert 3 < stopped_s < 6
    first, second = _starts(record)
    assert (first[3], second[3]) == ("cut-off", "elsewhere")
    assert float(second[2]) > gone_at  # the retry began after the first run was dead
    events = aws.sfn.get_execution_history(executionArn=arn)["events"]
    assert [e["type"] for e in events].count("ActivityTimedOut") == 1
    assert audit_row(aws, stack, "job.sh", f"exec-{uid}")["attempt"] == 2


def _shipped(state_dir: Path) -> bool:
    return any(e["shipping"] and e["shipping"]["offset"] for e in journal_entries(state_dir))


def _starts(record: Path) -> list[tuple[str, str, str, str]]:
    if not record.exists():
        return []
    return [
        tuple(line.split()) for line in record.read_text().splitlines() if line.startswith("start")
    ]  # type: ignore[misc]
