"""1. No deadline on delivery while the agent lives: a real agent process behind a FaultProxy
that cuts the network to the emulator, for longer than any call's deadline.

Minutes-long outages are simulated with short settings where the behaviour is the same: with
`aws_call_deadline_s=1` an outage of several seconds outlasts every call's deadline several
times over (the code path of a 10-minute outage under the default 60 s), and
`outage_warning_interval_s=1` stands for the minute between two warnings.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    FAST_FAILING,
    AgentProcess,
    agent_process,
    agent_settings,
    audit_row,
    emulator_port,
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

from cloud.emulator.faultproxy import FaultProxy

pytestmark = pytest.mark.usefixtures("emulator")


@pytest.fixture
def proxy(emulator: Any) -> Any:
    with FaultProxy(emulator_port(emulator)) as running:
        yield running


def _chatty_script(settings: Any, name: str, lines: int, go: Path) -> None:
    half = lines // 2
    write_script(
        settings.script_dir,
        name,
        f"""
        for i in $(seq -w 1 {half}); do echo "line $i"; done
        while [ ! -e {go} ]; do sleep 0.05; done
        for i in $(seq -w {half + 1} {lines}); do echo "line $i"; done
        """,
    )


def _all_acknowledged(settings: Any) -> bool:
    entries = journal_entries(settings.state_dir)
    return len(entries) == 4 and all(
        e["shipping"] and e["shipping"]["offset"] == Path(e["shipping"]["path"]).stat().st_size
        for e in entries
    )


def _local_lines(settings: Any, uid: str, job: str) -> int:
    path = settings.log_dir / f"wf-{uid}" / f"exec-{uid}" / f"{job}.log"
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def test_a_long_outage_loses_no_line_no_audit_write_and_no_completion(
    aws: Any, emulator: Any, proxy: FaultProxy, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid, heartbeat_s=30, map_jobs=True)
    settings = agent_settings(tmp_path, stack, **FAST_FAILING)
    go = tmp_path / "go"
    jobs = [f"j{i}.sh" for i in range(4)]
    for job in jobs:
        _chatty_script(settings, job, 200, go)
    inputs = [task_input(uid, job, heartbeat_seconds=30) for job in jobs]
    with agent_process(settings, tmp_path, endpoint_url=proxy.endpoint_url) as agent:
        arn = start(aws, stack, {"jobs": inputs}, f"exec-{uid}")
        wait_for(lambda: all(_local_lines(settings, uid, j) >= 100 for j in jobs), 30)
        # Cut when every line so far is shipped and acknowledged: a batch whose answer the
        # cut swallowed would be sent again after it (a repeat, counted by `make chaos`).
        wait_for(lambda: _all_acknowledged(settings), 30, "the first halves to ship")
        proxy.cut()
        go.touch()  # the scripts finish during the outage
        wait_for(
            lambda: sum("script_end" in str(e) for e in journal_entries(settings.state_dir)) == 4
        )
        # Hold the cut until the agent itself has reported three warnings (>= 2 s of outage
        # after the scripts ended: every call's 1 s deadline passed twice over).
        agent.wait_for_event("aws_unreachable", timeout_s=30, times=3)
        outage_s = time.monotonic()
        proxy.restore()
        execution = finished(aws, arn, timeout_s=60)
        wait_for(lambda: not journal_entries(settings.state_dir), 30, "every line to be shipped")
        assert execution["status"] == "SUCCEEDED", failure_of(aws, arn)
        agent.wait_for_event("aws_reachable_again")
    for job in jobs:
        stream = f"wf-{uid}/exec-{uid}/{job}"
        assert log_messages(aws, stack, stream) == [f"line {i:03d}" for i in range(1, 201)]
        row = audit_row(aws, stack, job, f"exec-{uid}")
        assert row["execution_status"] == "Completed" and row["attempt"] == 1
    _assert_one_warning_per_interval(agent, outage_s)


def _assert_one_warning_per_interval(agent: AgentProcess, restored_at: float) -> None:
    warnings = [e for e in agent.events() if e.get("level") == "warning"]
    names = {e["event"] for e in warnings}
    # Not one per failed call: the calls failed by the hundred meanwhile.
    assert names <= {"aws_unreachable"}, names
    failed = sum(sum(e["failed_calls"].values()) for e in warnings)
    assert failed > 3 * len(warnings)
    down_for = [e["down_for_s"] for e in warnings]
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(down_for))


def test_a_job_does_not_wait_for_cloudwatch_and_its_lines_follow_after_a_restart(
    aws: Any, emulator: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid, heartbeat_s=30)
    settings = agent_settings(tmp_path, stack, drain_timeout_s=1, **FAST_FAILING)
    go = tmp_path / "go"
    _chatty_script(settings, "job.sh", 300, go)
    stream = f"wf-{uid}/exec-{uid}/job.sh"
    with FaultProxy(emulator_port(emulator)) as logs_proxy:
        # Only CloudWatch Logs goes through the proxy: Step Functions and DynamoDB stay up.
        env = {"AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": logs_proxy.endpoint_url}
        with agent_process(settings, tmp_path, env, name="first") as first:
            arn = start(aws, stack, task_input(uid, "job.sh", heartbeat_seconds=30), f"exec-{uid}")
            wait_for(lambda: len(_messages(aws, stack, stream)) == 150, 30, "the first half")
            # ... and the agent has its answer (cut before it, the batch would be owed again).
            wait_for(lambda: _shipped_offset(settings.state_dir) > 0, 30, "the offset")
            logs_proxy.cut()
            go.touch()
            wait_for(lambda: "script_end" in str(journal_entries(settings.state_dir)))
            ended = time.monotonic()
            assert finished(aws, arn, timeout_s=30)["status"] == "SUCCEEDED"
            # The completion waited log_flush_wait_s (1 s) for CloudWatch, not for ever.
            assert time.monotonic() - ended < 6
            assert first.stop() == 0  # a drain of 1 s: the rest stays owed in the journal
        [entry] = journal_entries(settings.state_dir)
        assert entry["reported"] and entry["shipping"]["offset"] > 0
        assert len(_messages(aws, stack, stream)) == 150
        logs_proxy.restore()
        with agent_process(settings, tmp_path, env, name="second"):
            wait_for(lambda: not journal_entries(settings.state_dir), 30, "the rest to ship")
    # Every line once, in order: the second agent went on from where the first stopped.
    assert _messages(aws, stack, stream) == [f"line {i:03d}" for i in range(1, 301)]


def _shipped_offset(state_dir: Path) -> int:
    entries = journal_entries(state_dir)
    return int(entries[0]["shipping"]["offset"]) if entries and entries[0]["shipping"] else 0


def _messages(aws: Any, stack: Any, stream: str) -> list[str]:
    try:
        return log_messages(aws, stack, stream)
    except aws.logs.exceptions.ResourceNotFoundException:
        return []


def test_memory_stays_flat_however_much_output_waits_for_cloudwatch(
    aws: Any, emulator: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid, heartbeat_s=30)
    settings = agent_settings(tmp_path, stack, **FAST_FAILING)
    # 20 MB of output while CloudWatch is away: it waits in the local file, not in memory.
    write_script(
        settings.script_dir,
        "big.sh",
        'yes "$(printf "%0100d" 0)" | head -n 200000\necho last',
    )
    with FaultProxy(emulator_port(emulator)) as logs_proxy:
        env = {"AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": logs_proxy.endpoint_url}
        with agent_process(settings, tmp_path, env) as agent:
            logs_proxy.cut()
            before_kib = agent.rss_kib()
            arn = start(aws, stack, task_input(uid, "big.sh", heartbeat_seconds=30), f"exec-{uid}")
            assert finished(aws, arn, timeout_s=60)["status"] == "SUCCEEDED"
            grown_kib = agent.rss_kib() - before_kib
            [entry] = journal_entries(settings.state_dir)  # the output is still owed
            assert entry["shipping"]["offset"] == 0
    # Holding the output would take 20 MB and several times that in Python objects (measured:
    # under 1 MB of growth; the bound leaves room for the allocator).
    assert grown_kib < 20_000, f"the agent grew by {grown_kib} KiB"
