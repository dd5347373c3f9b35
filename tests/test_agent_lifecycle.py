"""Scale-in and Spot interruptions: a real agent, a fake instance metadata service on 127.0.0.1
and the emulator's Auto Scaling group with a termination lifecycle hook."""

from __future__ import annotations

import datetime as dt
import json
import math
import signal
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    Stack,
    agent_events,
    agent_process,
    agent_settings,
    agent_thread,
    audit_row,
    failure_of,
    finished,
    make_stack,
    start,
    task_input,
    wait_for,
    write_script,
)
from fleet_helpers import (
    HOOK_TAG,
    FakeImds,
    fake_imds,
    instance_state,
    lifecycle_calls,
    make_group,
)

from agent import schema
from agent.lifecycle import UnusableAnswer, parse_lifecycle_state, parse_spot_action
from agent.settings import Settings, SettingsError

pytestmark = pytest.mark.usefixtures("emulator")


def test_metadata_answers_are_parsed_strictly() -> None:
    assert parse_lifecycle_state("Terminated\n") == "Terminated"
    assert parse_lifecycle_state("Warmed:Stopped") == "Warmed:Stopped"
    notice = parse_spot_action('{"action": "terminate", "time": "2026-11-27T08:22:00Z"}')
    assert (
        notice.action == "terminate"
        and notice.at_epoch_s == dt.datetime(2026, 11, 27, 8, 22, tzinfo=dt.UTC).timestamp()
    )
    for garbage in ("terminated", "<html>oops</html>", "", "InService; rm -rf /"):
        with pytest.raises(UnusableAnswer, match="not a lifecycle state"):
            parse_lifecycle_state(garbage)
    for garbage in (
        "{not json",
        "[]",
        '{"action": "terminate"}',
        '{"action": "reboot", "time": "2026-11-27T08:22:00Z"}',
        '{"action": "stop", "time": "soon"}',
        '{"action": "stop", "time": "2026-11-27T08:22:00"}',  # no time zone
        '{"action": "stop", "time": 1795249320}',
    ):
        with pytest.raises(UnusableAnswer, match="not a Spot instance action"):
            parse_spot_action(garbage)


def test_metadata_is_read_at_least_every_10_s(tmp_path: Path) -> None:
    # A Spot notice gives two minutes: a slower look would eat the time jobs need to finish.
    assert Settings.model_fields["lifecycle_poll_interval_s"].default <= 10
    arn = "arn:aws:states:us-east-1:123456789012:activity:rsql-jobs"
    with pytest.raises(SettingsError, match="RSQL_AGENT_LIFECYCLE_POLL_INTERVAL_S"):
        Settings.load(activity_arn=arn, script_dir=tmp_path, lifecycle_poll_interval_s=11)


def _watching(tmp_path: Path, stack: Stack, imds: FakeImds, **overrides: Any) -> Settings:
    """Test settings for an agent that reads the fake instance metadata every 0.2 s."""
    values: dict[str, Any] = {"imds_endpoint_url": imds.url, "lifecycle_poll_interval_s": 0.2}
    return agent_settings(tmp_path, stack, **{**values, **overrides})


def _log_of(settings: Any, uid: str, job: str, execution: str) -> Path:
    return settings.log_dir / f"wf-{uid}" / execution / f"{job}.log"


@pytest.mark.slow
def test_a_job_runs_through_a_scale_in_and_the_lifecycle_action_is_completed_once(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    group = make_group(aws, uid)
    stack = make_stack(aws, uid)
    with fake_imds(group.instance_id) as imds:
        # The instance exposes its tags in metadata: no DescribeTags needed.
        imds.set("tags/instance", f"Name\n{schema.AUTOSCALING_GROUP_TAG}\n{HOOK_TAG}\n")
        imds.set(f"tags/instance/{schema.AUTOSCALING_GROUP_TAG}", group.name)
        imds.set(f"tags/instance/{HOOK_TAG}", group.hook)
        settings = _watching(
            tmp_path,
            stack,
            imds,
            instance_id=group.instance_id,
            concurrency=1,
            pollers=1,
            lifecycle_heartbeat_interval_s=2,
        )
        write_script(settings.script_dir, "etl.sh", "echo begun\nsleep 20\necho done")
        with agent_thread(settings) as agent:
            arn = start(aws, stack, task_input(uid, "etl.sh"), f"exec-{uid}")
            log_file = _log_of(settings, uid, "etl.sh", f"exec-{uid}")
            wait_for(lambda: log_file.exists() and "begun" in log_file.read_text())
            aws.autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=group.instance_id, ShouldDecrementDesiredCapacity=True
            )
            imds.set("autoscaling/target-lifecycle-state", "Terminated")
            wait_for(lambda: agent.draining, 10, "the agent to drain")
            polls_at_notice = agent.polls_started
            second = start(aws, stack, task_input(uid, "etl.sh"), f"exec2-{uid}")
            completed = wait_for(
                lambda: [c for c in lifecycle_calls(aws, group) if c["action"].startswith("Compl")],
                60,
                "CompleteLifecycleAction",
            )
    execution = finished(aws, arn)
    assert execution["status"] == "SUCCEEDED"
    assert "done" in log_file.read_text()
    # Heartbeats while the job ran (about one every 2 s of its 20), then one completion.
    calls = lifecycle_calls(aws, group)
    beats = [c for c in calls if c["action"] == "RecordLifecycleActionHeartbeat"]
    assert len(beats) >= 5 and all(c["accepted"] for c in beats)
    assert [(c["result"], c["accepted"]) for c in completed] == [("CONTINUE", True)]
    assert calls[-1] == completed[0]
    assert completed[0]["at"] >= execution["stopDate"].timestamp() - 1
    assert instance_state(aws, group) is None  # Auto Scaling went on and terminated it
    # No new task was taken meanwhile: no poll after the notice, the second run still waits.
    assert agent.polls_started == polls_at_notice and agent.jobs_started == 1
    assert aws.sfn.describe_execution(executionArn=second)["status"] == "RUNNING"
    assert audit_row(aws, stack, "etl.sh", f"exec2-{uid}") == {}
    aws.sfn.stop_execution(executionArn=second)


@pytest.mark.parametrize("names_from", ["describe_tags", "settings"])
def test_an_idle_agent_completes_the_action_at_once(
    aws: Any, uid: str, tmp_path: Path, names_from: str
) -> None:
    # No tags in instance metadata (404): the names come from ec2:DescribeTags of the tags
    # the group propagated, or from the settings on an untagged group.
    group = make_group(aws, uid, tags=names_from == "describe_tags")
    stack = make_stack(aws, uid)
    named: dict[str, Any] = {}
    if names_from == "settings":
        named = {"autoscaling_group_name": group.name, "lifecycle_hook_name": group.hook}
    with fake_imds(group.instance_id) as imds:
        settings = _watching(tmp_path, stack, imds, instance_id=group.instance_id, **named)
        with agent_thread(settings) as agent:
            aws.autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=group.instance_id, ShouldDecrementDesiredCapacity=True
            )
            imds.set("autoscaling/target-lifecycle-state", "Terminated")
            wait_for(lambda: instance_state(aws, group) is None, 30, "the instance to go")
    assert agent.drain_reason == "scale-in"
    assert imds.count("tags/instance") == (1 if names_from == "describe_tags" else 0)
    calls = [(c["action"], c["accepted"]) for c in lifecycle_calls(aws, group)]
    assert calls[-1] == ("CompleteLifecycleAction", True)
    assert calls.count(("CompleteLifecycleAction", True)) == 1


def test_a_spot_notice_fails_back_what_cannot_finish_before_the_interruption(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    with fake_imds() as imds:
        settings = _watching(tmp_path, stack, imds, concurrency=2, pollers=1, spot_margin_s=3)
        write_script(settings.script_dir, "short.sh", "echo begun\nsleep 2\necho done")
        write_script(settings.script_dir, "long.sh", "echo begun\nsleep 300")
        with agent_thread(settings) as agent:
            runs = {}
            for job in ("short.sh", "long.sh"):
                name = f"exec-{uid}-{job[:-3]}"
                runs[job] = start(
                    aws, stack, task_input(uid, job, workflow_execution_id=name), name
                )
            for job in ("short.sh", "long.sh"):
                path = _log_of(settings, uid, job, f"exec-{uid}-{job[:-3]}")
                wait_for(lambda path=path: path.exists() and "begun" in path.read_text())
            interruption_at = math.ceil(time.time()) + 9
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(interruption_at))
            imds.set("spot/instance-action", json.dumps({"action": "terminate", "time": when}))
            wait_for(lambda: not agent.jobs and agent.draining, 30, "the drain to end")
    assert agent.drain_reason == "spot"
    assert finished(aws, runs["short.sh"])["status"] == "SUCCEEDED"
    failed = finished(aws, runs["long.sh"])
    assert failed["status"] == "FAILED"
    assert failure_of(aws, runs["long.sh"])[0] == "Agent.ShuttingDown"
    # Reported before the instance goes, so another host can take the job at once.
    assert failed["stopDate"].timestamp() < interruption_at
    row = audit_row(aws, stack, "long.sh", f"exec-{uid}-long")
    assert row["execution_status"] == "Cancelled"


def _not_http(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"\x00\x01 this is not HTTP\r\n\r\n")
    handler.close_connection = True


def test_metadata_that_answers_garbage_gets_one_warning_line_and_no_crash(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    with fake_imds() as imds:
        imds.set("autoscaling/target-lifecycle-state", (200, b"\xff\xfe\x00\x00binary"))
        imds.set("spot/instance-action", "<html><body>Gateway\nTimeout</body></html>")
        imds.set("tags/instance", _not_http)
        settings = _watching(tmp_path, stack, imds, lifecycle_poll_interval_s=0.1)
        write_script(settings.script_dir, "job.sh", "echo fine")
        process = agent_process(settings, tmp_path)
        try:
            wait_for(lambda: imds.count("spot/instance-action") >= 20, 60, "polls of garbage")
            arn = start(aws, stack, task_input(uid, "job.sh"), f"exec-{uid}")
            assert finished(aws, arn)["status"] == "SUCCEEDED"
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    warnings = [e for e in agent_events(tmp_path) if e["event"] == "instance_metadata_unusable"]
    assert sorted(w["path"] for w in warnings) == [
        "autoscaling/target-lifecycle-state",
        "spot/instance-action",
        "tags/instance",
    ]
    for warning in warnings:
        assert "\n" not in warning["problem"] and len(warning["problem"]) < 300
        assert warning["problem"].startswith(
            f"instance metadata at {imds.url} ({warning['path']}): "
        )
    assert not [e for e in agent_events(tmp_path) if e.get("level") == "error"]
