"""The report's pure parts, without AWS: the critical path by its definition (cloud/report.py's
docstring), the console's log stream links, the timeline's ticks. The page itself is checked in
Chromium against a real run (test_workflow_report.py)."""

from __future__ import annotations

import pytest

from cloud.report import Span, StageInfo, console_log_url, critical_path
from cloud.report_html import _ticks


def stage(index: int, kind: str, jobs: list[str], max_parallel: int = 0) -> StageInfo:
    return StageInfo(index, "", kind, max_parallel, True, tuple(jobs))


def span(job: str, stage_index: int, start_s: float, end_s: float) -> Span:
    return Span(job, stage_index, start_s, end_s)


def test_a_sequential_stage_is_a_chain_by_its_order_whatever_the_clocks_say() -> None:
    # s2's host clock runs behind: its row says it started before s1 ended.
    spans = [span("s1", 0, 0.0, 1.0), span("s2", 0, 0.9, 2.0), span("s3", 0, 2.1, 3.0)]
    assert critical_path(spans, [stage(0, "sequential", ["s1", "s2", "s3"])]) == ["s1", "s2", "s3"]


def test_an_unbounded_parallel_stage_contributes_the_job_that_ended_last() -> None:
    stages = [stage(0, "sequential", ["s1", "s2"]), stage(1, "parallel", ["p1", "p2", "p3"])]
    spans = [
        span("s1", 0, 0.0, 1.0),
        span("s2", 0, 1.1, 2.0),
        span("p1", 1, 2.2, 2.3),  # ended before p3 started: still not what p3 waited for
        span("p2", 1, 2.2, 3.0),
        span("p3", 1, 2.4, 5.0),
    ]
    assert critical_path(spans, stages) == ["s1", "s2", "p3"]


def test_a_bounded_parallel_stage_follows_the_job_that_freed_the_slot() -> None:
    stages = [stage(0, "sequential", ["s1"]), stage(1, "parallel", ["a", "b", "c", "d"], 2)]
    spans = [
        span("s1", 0, 0.0, 1.0),
        span("a", 1, 1.1, 2.0),
        span("b", 1, 1.1, 3.0),
        span("c", 1, 2.1, 4.0),  # took a's slot
        span("d", 1, 4.1, 4.5),  # took c's slot (b's ended earlier)
    ]
    assert critical_path(spans, stages) == ["s1", "a", "c", "d"]


def test_without_the_stage_kinds_each_job_waited_for_the_last_to_end_before_it() -> None:
    unknown = [stage(0, "", ["x", "y"]), stage(1, "", ["z"])]
    spans = [span("x", 0, 0.0, 1.0), span("y", 0, 1.2, 2.0), span("z", 1, 2.1, 2.5)]
    assert critical_path(spans, unknown) == ["x", "y", "z"]
    assert critical_path([], unknown) == []


def test_a_stage_without_jobs_that_ran_is_stepped_over() -> None:
    stages = [stage(0, "parallel", ["a", "b"]), stage(1, "sequential", ["gone"])]
    stages.append(stage(2, "sequential", ["last"]))
    spans = [span("a", 0, 0.0, 1.0), span("b", 0, 0.0, 1.5), span("last", 2, 1.6, 2.0)]
    assert critical_path(spans, stages) == ["b", "last"]


@pytest.mark.parametrize(
    ("partition", "region", "host"),
    [
        ("aws", "eu-west-1", "https://eu-west-1.console.aws.amazon.com"),
        ("aws-cn", "cn-north-1", "https://console.amazonaws.cn"),
        ("aws-us-gov", "us-gov-west-1", "https://console.amazonaws-us-gov.com"),
    ],
)
def test_log_links_open_the_stream_in_the_console_of_its_region(
    partition: str, region: str, host: str
) -> None:
    url = console_log_url(region, "/rsql/jobs", "wf/run-1/load [1].sh/2", partition)
    assert url == (
        f"{host}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/"
        "$252Frsql$252Fjobs/log-events/wf$252Frun-1$252Fload$2520$255B1$255D.sh$252F2"
    )


@pytest.mark.parametrize("span_s", [0.05, 0.9, 3.7, 59, 61, 3599, 7 * 3600, 30 * 3600])
def test_ticks_are_round_and_cover_the_run(span_s: float) -> None:
    ticks = _ticks(span_s)
    assert ticks[0] == 0 and ticks[-1] <= span_s + 1e-6 and 1 <= len(ticks) <= 9
    step = ticks[1] - ticks[0] if len(ticks) > 1 else span_s
    assert ticks[-1] + step > span_s - 1e-6  # no round tick left out at the end
