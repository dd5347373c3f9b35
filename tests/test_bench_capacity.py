"""The capacity model's arithmetic (docs/capacity.md is its output)."""

from __future__ import annotations

from bench import capacity


def test_fleet_rates_follow_hosts_slots_and_job_length() -> None:
    per_job = {**capacity.MEASURED_PER_JOB, "PutLogEvents": 3.0}
    fleet = capacity.rates(hosts=100, job_s=60.0, per_job=per_job)
    jobs_per_s = 100 * capacity.CONCURRENCY / 60.0
    assert fleet["SendTaskSuccess/Failure"] == jobs_per_s
    assert fleet["PutLogEvents"] == 3 * jobs_per_s
    assert fleet["UpdateItem (WRU)"] == 2 * jobs_per_s
    # Heartbeats go with the jobs running: 800 running, one beat every 20 s each.
    assert fleet["SendTaskHeartbeat"] == 800 / capacity.HEARTBEAT_INTERVAL_S
    # A job shorter than the heartbeat interval never beats.
    assert capacity.rates(hosts=10, job_s=10.0, per_job=per_job)["SendTaskHeartbeat"] == 0


def test_the_report_names_what_binds_first() -> None:
    text = capacity.render(dict(capacity.MEASURED_PER_JOB))
    assert "- 100 hosts, 10 s jobs: CreateLogStream at 160% of its quota" in text
    assert "**80.0 (160%)**" in text  # over a quota: bold
