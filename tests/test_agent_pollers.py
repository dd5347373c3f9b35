"""The poll loops: an idle host keeps `pollers` polls open; while tasks keep coming, every
free slot gets a poll, and the added loops end with their first empty poll."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    Stack,
    agent_settings,
    agent_thread,
    finished,
    make_stack,
    start,
    task_input,
    wait_for,
    write_script,
)

pytestmark = pytest.mark.usefixtures("emulator")


def test_polls_follow_the_work(aws: Any, uid: str, tmp_path: Path) -> None:
    stack: Stack = make_stack(aws, uid, map_jobs=True)
    settings = agent_settings(tmp_path, stack, concurrency=4, pollers=1)
    write_script(settings.script_dir, "quick.sh", "exit 0")
    jobs = [task_input(uid, "quick.sh", workflow_execution_id=f"exec-{uid}-{i}") for i in range(12)]
    with agent_thread(settings) as agent:
        assert agent.pollers.loops == 1
        arn = start(aws, stack, json.dumps({"jobs": jobs}), f"exec-{uid}")
        assert finished(aws, arn, 60)["status"] == "SUCCEEDED"
        # Tasks were queued: more than one poll was open at once, never more than the slots.
        assert 1 < agent.pollers.most_loops <= 4
        assert agent.jobs_started == 12
        # Nothing queued any more: each added loop ends with its first empty poll (the
        # test emulator's long poll lasts 3 s), and the host is back to one poll.
        wait_for(lambda: agent.pollers.loops == 1, 20, "the added poll loops to end")
