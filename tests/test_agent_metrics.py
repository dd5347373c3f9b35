"""Per-host metrics: the EMF lines themselves, and a real agent publishing them to the
emulator, whose CloudWatch extracts them as AWS does (cloud/emf_emu.py)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    agent_settings,
    agent_thread,
    finished,
    make_stack,
    start,
    task_input,
    write_script,
)

from agent import schema
from agent.metrics import UNITS, Interval, JobMetrics, _wait_ms, emf_lines
from cloud.emulator import emf as emf_emu

DIMS = {"Activity": "rsql-jobs", "InstanceId": "i-0123456789abcdef0"}


def _iso(moment_s: float) -> str:
    return schema.iso_utc_ms(moment_s)


def test_an_interval_is_one_valid_emf_line_with_every_metric() -> None:
    metrics = JobMetrics(slots=8)
    interval = Interval(start_s=1_800_000_000.0, started=3, durations_ms=[812, 905], waits_ms=[40])
    interval.counts.update(JobsCompleted=2, JobsFailed=1)
    interval.busy_slot_s = 2.5 * 60  # 2.5 slots busy on average over a minute
    [line] = emf_lines(interval, 60.0, metrics, "RSQL/Agent", DIMS)
    document = json.loads(line)
    assert document["_aws"]["Timestamp"] == 1_800_000_000_000
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "RSQL/Agent"
    assert directive["Dimensions"] == [["Activity"], ["Activity", "InstanceId"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == UNITS
    assert document["SlotsBusy"] == 2.5 and document["Slots"] == 8
    assert document["Utilization"] == 31.25 and document["Polling"] == 1
    assert (document["JobsStarted"], document["JobsCompleted"], document["JobsFailed"]) == (3, 2, 1)
    assert document["JobDuration"] == [812, 905] and document["TaskWaitTime"] == [40]
    # What CloudWatch makes of it: every metric under both dimension sets.
    [(namespace, data)] = emf_emu.metric_data(line)
    assert namespace == "RSQL/Agent" and len(data) == 2 * len(UNITS)
    durations = [d for d in data if d["MetricName"] == "JobDuration"]
    assert [len(d["Dimensions"]) for d in durations] == [1, 2]
    assert durations[0]["Values"] == [812.0, 905.0] and durations[0]["Unit"] == "Milliseconds"


def test_more_than_100_values_spill_into_further_lines_and_empty_series_are_left_out() -> None:
    interval = Interval(start_s=1_800_000_000.0, durations_ms=list(range(250)))
    lines = [json.loads(line) for line in emf_lines(interval, 60.0, JobMetrics(4), "N", DIMS)]
    assert [len(line.get("JobDuration", [])) for line in lines] == [100, 100, 50]
    assert "TaskWaitTime" not in lines[0] and "JobsStarted" not in lines[1]
    for line in lines:
        names = [m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        assert all(name in line for name in names)
        assert emf_emu.metric_data(json.dumps(line))  # valid EMF, every one


def test_the_wait_counts_only_first_attempts_with_a_scheduled_time() -> None:
    now = time.time()
    assert _wait_ms(json.dumps({"scheduled_at": _iso(now - 2.5), "retry_count": 0}), now) in (
        2499,
        2500,
        2501,
    )
    assert _wait_ms(json.dumps({"scheduled_at": _iso(now - 2.5)}), now) is not None
    for no_wait in (
        {"scheduled_at": _iso(now - 2.5), "retry_count": 1},
        {"scheduled_at": "yesterday"},
        {"scheduled_at": "2026-11-27T08:01:02"},  # no zone
        {},
    ):
        assert _wait_ms(json.dumps(no_wait), now) is None
    assert _wait_ms("not json", now) is None and _wait_ms("[1]", now) is None


def test_busy_slots_are_averaged_over_the_interval() -> None:
    now = [100.0]
    metrics = JobMetrics(slots=2, clock=lambda: now[0])
    metrics.set_busy(2)
    now[0] += 15  # two slots busy for 15 s
    metrics.set_busy(1)
    now[0] += 30  # one for 30 s
    metrics.set_busy(0)
    now[0] += 15  # none for 15 s
    interval, _ = metrics.take()
    assert interval.busy_slot_s == 2 * 15 + 1 * 30
    line = json.loads(emf_lines(interval, 60.0, metrics, "N", DIMS)[0])
    assert (line["SlotsBusy"], line["Utilization"]) == (1.0, 50.0)


def test_emf_that_breaks_the_specification_creates_no_metric() -> None:
    good = {"_aws": {"Timestamp": 1, "CloudWatchMetrics": []}}
    assert emf_emu.metric_data("plain text line") == []
    assert emf_emu.metric_data(json.dumps({"level": "info"})) == []
    assert emf_emu.metric_data(json.dumps(good)) == []
    directive = {"Namespace": "N", "Dimensions": [["D"]], "Metrics": [{"Name": "M"}]}
    for broken in (
        {"_aws": {"CloudWatchMetrics": [directive]}, "D": "x", "M": 1},  # no timestamp
        {"_aws": {"Timestamp": 1, "CloudWatchMetrics": [directive]}, "M": 1},  # no dimension
        {"_aws": {"Timestamp": 1, "CloudWatchMetrics": [directive]}, "D": "x", "M": "1"},
        {"_aws": {"Timestamp": 1, "CloudWatchMetrics": [directive]}, "D": "x", "M": [1] * 101},
    ):
        with pytest.raises(emf_emu.InvalidEmf):
            emf_emu.metric_data(json.dumps(broken))


@pytest.mark.usefixtures("emulator")
def test_the_agent_publishes_its_jobs_and_cloudwatch_has_them(
    aws: Any, uid: str, tmp_path: Path
) -> None:
    stack = make_stack(aws, uid)
    group, namespace = f"/t/{uid}/metrics", f"RSQLTest/{uid}"
    aws.logs.create_log_group(logGroupName=group)
    settings = agent_settings(
        tmp_path,
        stack,
        metrics_enabled=True,
        metrics_log_group=group,
        metrics_namespace=namespace,
        metrics_interval_s=1,
    )
    write_script(settings.script_dir, "ok.sh", "sleep 0.3")
    write_script(settings.script_dir, "fail.sh", "exit 3")
    write_script(settings.script_dir, "slow.sh", "sleep 30")
    started = time.time()
    with agent_thread(settings):
        runs = []
        for job, timeout_s in (("ok.sh", 30), ("fail.sh", 30), ("slow.sh", 1)):
            name = f"exec-{uid}-{job[:-3]}"
            fields = {"timeout_seconds": timeout_s, "retry_count": 0}
            fields["scheduled_at"] = _iso(time.time() - 2)  # as the state machine would
            task = task_input(uid, job, workflow_execution_id=name, **fields)
            runs.append(start(aws, stack, task, name))
        statuses = [finished(aws, arn)["status"] for arn in runs]
    assert statuses == ["SUCCEEDED", "FAILED", "FAILED"]
    lines = [
        json.loads(e["message"])
        for e in aws.logs.get_log_events(
            logGroupName=group, logStreamName=settings.instance_id, startFromHead=True
        )["events"]
    ]
    assert len(lines) >= 2  # one a second, and the last one at the stop

    def total(name: str) -> int:
        return sum(line.get(name, 0) for line in lines)

    assert [total(n) for n in ("JobsStarted", "JobsCompleted", "JobsFailed", "JobsTimedOut")] == [
        3,
        1,
        1,
        1,
    ]
    durations = [v for line in lines for v in line.get("JobDuration", [])]
    assert len(durations) == 3 and max(durations) >= 900  # slow.sh ran its 1 s timeout
    waits = [v for line in lines for v in line.get("TaskWaitTime", [])]
    assert len(waits) == 3 and all(2000 <= w < 60_000 for w in waits)
    assert any(line["SlotsBusy"] > 0 for line in lines if "SlotsBusy" in line)
    assert lines[-1]["Polling"] == 0  # the last line comes after the drain
    # CloudWatch extracted the metrics, for the fleet and for this host. (GetMetricData:
    # moto's GetMetricStatistics also counts metrics with more dimensions than asked for.)
    fleet = [{"Name": "Activity", "Value": f"t-{uid}"}]
    host = [*fleet, {"Name": "InstanceId", "Value": settings.instance_id}]
    queries = [
        {
            "Id": f"q{index}",
            "MetricStat": {
                "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dims},
                "Period": 60,
                "Stat": stat,
            },
        }
        for index, (name, dims, stat) in enumerate(
            [
                ("JobsStarted", fleet, "Sum"),
                ("JobsStarted", host, "Sum"),
                ("JobsTimedOut", fleet, "Sum"),
                ("JobDuration", host, "SampleCount"),
            ]
        )
    ]
    results = aws.client("cloudwatch").get_metric_data(
        MetricDataQueries=queries,
        StartTime=dt.datetime.fromtimestamp(started - 120, tz=dt.UTC),
        EndTime=dt.datetime.fromtimestamp(time.time() + 120, tz=dt.UTC),
    )["MetricDataResults"]
    assert [sum(r["Values"]) for r in results] == [3, 3, 1, 3]
