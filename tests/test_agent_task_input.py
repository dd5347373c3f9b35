"""Task input validation: anything but the contract's shape is RSQL.InvalidInput."""

from __future__ import annotations

import json

import pytest

from agent import errors
from agent.heartbeat import heartbeat_interval_s
from agent.job import parse_task_input

GOOD = {
    "workflow_id": "wf",
    "workflow_execution_id": "ex-1",
    "stage_index": 0,
    "job_name": "a.sh",
    "args": ["--full"],
    "timeout_seconds": 60,
    "heartbeat_seconds": 30,
    "restart_of": "",
}


def test_the_contract_shape_parses() -> None:
    task = parse_task_input(json.dumps(GOOD))
    assert (task.job_name, task.args, task.timeout_seconds) == ("a.sh", ["--full"], 60)
    assert not task.restart_of
    minimal = {
        k: v for k, v in GOOD.items() if k not in {"args", "restart_of", "heartbeat_seconds"}
    }
    assert parse_task_input(json.dumps(minimal)).args == []


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ("not json", ["input"]),
        ("[1, 2]", ["input"]),
        (json.dumps({**GOOD, "stage_index": "0"}), ["stage_index"]),
        (json.dumps({**GOOD, "args": "x"}), ["args"]),
        (json.dumps({**GOOD, "args": [1]}), ["args.0"]),
        (json.dumps({**GOOD, "timeout_seconds": 0}), ["timeout_seconds"]),
        (json.dumps({k: v for k, v in GOOD.items() if k != "job_name"}), ["job_name"]),
        (json.dumps({**GOOD, "job_name": ""}), ["job_name"]),
    ],
)
def test_bad_input_is_invalid_input_naming_the_field(raw: str, names: list[str]) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        parse_task_input(raw)
    assert caught.value.code == "RSQL.InvalidInput"
    for name in names:
        assert name in caught.value.message


def test_heartbeat_interval_is_at_most_a_third() -> None:
    assert heartbeat_interval_s(20, 30) == 10
    assert heartbeat_interval_s(2, 30) == 2
    assert heartbeat_interval_s(20, None) == 20
