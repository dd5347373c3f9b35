"""7. Attempt-safe audit: conditional writes against the emulator's DynamoDB, so a late or
repeated writer never overwrites a newer attempt's row and a lost response (a FaultProxy
resetting the connection after the table served the request) never counts an attempt twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    agent_settings,
    agent_thread,
    audit_row,
    emulator_port,
    finished,
    make_stack,
    start,
    task_input,
    wait_for,
    write_script,
)

from agent import errors, schema
from agent.audit import JobAuditTable, JobKey
from agent.aws import Aws
from agent.journal import AuditEnd
from cloud.emulator.faultproxy import FaultProxy

pytestmark = pytest.mark.usefixtures("emulator")


def _table(settings: Any) -> tuple[Aws, JobAuditTable]:
    aws = Aws(settings)
    return aws, JobAuditTable(aws, settings.job_audit_table, "i-1", "w")


def _key(uid: str) -> JobKey:
    return JobKey("job.sh", f"exec-{uid}", f"wf-{uid}", 0)


def test_a_late_writer_never_takes_a_newer_attempts_row(aws: Any, uid: str, tmp_path: Path) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack)
    ended = AuditEnd(status=schema.COMPLETED, duration_ms=5, exit_code=0)

    async def go() -> None:
        client, table = _table(settings)
        try:
            assert await table.start(_key(uid), 2, "second") == (2, f"wf-{uid}/exec-{uid}/job.sh/2")
            with pytest.raises(errors.StaleAttempt):  # attempt 1's start arrives late
                await table.start(_key(uid), 1, "first")
            await table.finish(_key(uid), 1, None, ended)  # and its end too: skipped
        finally:
            client.close()

    asyncio.run(go())
    row = audit_row(aws, stack, "job.sh", f"exec-{uid}")
    assert (row["attempt"], row["attempt_id"], row["execution_status"]) == (2, "second", "Running")
    assert "exit_code" not in row


def test_a_repeated_start_write_counts_one_attempt(aws: Any, uid: str, tmp_path: Path) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack)

    async def go() -> list[int]:
        client, table = _table(settings)
        try:
            counted = [(await table.start(_key(uid), 1, "a"))[0] for _ in range(2)]
            # Without the state machine's attempt the agent counts, once per attempt id.
            legacy = JobKey("other.sh", f"exec-{uid}", f"wf-{uid}", 0)
            counted += [(await table.start(legacy, None, "a"))[0] for _ in range(2)]
            counted.append((await table.start(legacy, None, "b"))[0])
            return counted
        finally:
            client.close()

    assert asyncio.run(go()) == [1, 1, 1, 1, 2]


def test_a_lost_response_never_counts_an_attempt_twice(
    aws: Any, emulator: Any, uid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, aws_read_timeout_s=2)
    with FaultProxy(emulator_port(emulator)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)

        async def go() -> int:
            client, table = _table(settings)
            try:
                proxy.set_reset_rate(1.0)  # the table does the write; its answer is lost
                write = asyncio.create_task(table.start(_key(uid), None, "only"))
                while not proxy.stats.responses_dropped:  # noqa: ASYNC110 - another thread's count
                    await asyncio.sleep(0.01)
                proxy.set_reset_rate(0.0)
                attempt, _ = await write  # retried after the reset
                return attempt
            finally:
                client.close()

        assert asyncio.run(go()) == 1
        assert proxy.stats.responses_dropped >= 1
    assert audit_row(aws, stack, "job.sh", f"exec-{uid}")["attempt"] == 1


def test_the_state_machines_attempt_numbers_a_retried_job(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack)
    write_script(settings.script_dir, "job.sh", "echo hi")
    with agent_thread(settings):
        # The state machine's third try of the job: RetryCount 2.
        arn = start(aws, stack, task_input(uid, "job.sh", retry_count=2), f"exec-{uid}")
        output = json.loads(finished(aws, arn)["output"])
    row = audit_row(aws, stack, "job.sh", f"exec-{uid}")
    assert row["attempt"] == 3 and row["execution_status"] == "Completed"
    assert output["log_stream"] == row["log_stream"] == f"wf-{uid}/exec-{uid}/job.sh/3"
    wait_for(lambda: not list(settings.state_dir.glob("*.task.json")))
