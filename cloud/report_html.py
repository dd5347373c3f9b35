"""`rsql-cloud workflow report --html`: a `RunReport` as one self-contained page.

Everything is inline (CSS, a few lines of script for the hover box, SVG for the bars and the
sparklines) and a Content-Security-Policy forbids the page any other source, so it opens
offline, from a mail attachment or an artifact store, and nothing it shows can load anything.
Every text from the tables (job names, causes, hosts) is HTML-escaped; the hover box sets it
as text, never as markup.
"""

from __future__ import annotations

import html
import math
import statistics
from importlib import resources
from typing import Final

from agent import schema
from agent.schema import JobAudit as J
from cloud.report import JobReport, Point, RunReport, StageInfo
from cloud.reports import format_duration

# The narrowest bar, in % of the timeline, so a job of a few ms in a long run stays visible.
MIN_BAR_PCT: Final = 0.3
SPARK_WIDTH: Final = 120
SPARK_HEIGHT: Final = 26
_SPARK_PAD: Final = 4
# A job this much slower (or faster) than its median over the earlier runs is marked.
SLOWER_RATIO: Final = 1.25
_TICK_STEPS_S: Final = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
_MAX_TICKS: Final = 8
_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _asset(name: str) -> str:
    return resources.files("cloud").joinpath(name).read_text(encoding="utf-8")


def render(report: RunReport) -> str:
    """The whole page."""
    title = f"{report.workflow_id} · {report.execution_id}"
    body = [
        _header(report),
        _causes(report),
        _legend(),
        _timeline(report),
        '<div id="tip" role="tooltip" hidden></div>',
    ]
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>\n{_asset('report.css')}</style>\n</head>\n"
        f"<body>\n{''.join(body)}\n<script>\n{_asset('report.js')}</script>\n</body></html>\n"
    )


def _header(report: RunReport) -> str:
    path = report.critical_path
    facts = [
        ("Execution", report.execution_id),
        ("Started", report.start_ts or "-"),
        ("Ended", report.end_ts or "still running"),
        ("Wall time", format_duration(report.wall_s)),
        ("Region", report.region),
        ("Critical path", " → ".join(path) if path else "-"),
        ("Report made", report.generated_ts),
    ]
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    return (
        f'<header><h1>{_e(report.workflow_id)} <span class="badge s-{_e(report.status)}" '
        f'id="run-status">{_e(report.status)}</span></h1><dl class="facts">{rows}</dl></header>\n'
    )


def _causes(report: RunReport) -> str:
    """The run's error and cause, then each failed job's, in full."""
    parts = []
    # A job's failure is the run's: its cause is shown once, with the job.
    source = next(
        (j.job for j in report.jobs if report.cause and j.row.get(J.CAUSE) == report.cause), None
    )
    if source is not None:
        parts.append(
            f'<article class="cause" id="run-cause"><h3>Run: {_e(report.error or "")}, '
            f"from {_e(source)} (below)</h3></article>"
        )
    elif report.error or report.cause:
        parts.append(
            f'<article class="cause" id="run-cause"><h3>Run: {_e(report.error or "")}</h3>'
            f"<pre>{_e(report.cause or '')}</pre></article>"
        )
    for job in report.jobs:
        cause = job.row.get(J.CAUSE)
        if not cause:
            continue
        exit_code = job.row.get(J.EXIT_CODE, "-")
        parts.append(
            f'<article class="cause" data-job="{_e(job.job)}"><h3>{_e(job.job)} · '
            f"{_e(job.row.get(J.ERROR) or job.status)} · exit {_e(exit_code)}</h3>"
            f"<pre>{_e(cause)}</pre></article>"
        )
    return (
        f'<section class="causes"><h2>Why it failed</h2>{"".join(parts)}</section>\n'
        if parts
        else ""
    )


def _legend() -> str:
    words = [schema.COMPLETED, schema.FAILED, schema.TIMED_OUT, schema.CANCELLED]
    words += [schema.RUNNING, schema.SKIPPED, schema.ABANDONED]
    items = "".join(f'<span class="key s-{w}"></span>{w}' for w in words)
    return (
        f'<p class="legend">{items}<span class="key crit-key"></span>critical path '
        "(the chain of jobs that set the wall time)</p>\n"
    )


def _timeline(report: RunReport) -> str:
    span_s = max(report.wall_s, 1e-3)
    ticks = _ticks(span_s)
    runs = len(report.runs)
    head = (
        '<thead><tr><th class="name">Job</th>'
        f'<th class="track">{_axis(ticks, span_s)}</th><th class="dur">Duration</th>'
        f'<th class="spark">Last {runs} run{"s" if runs != 1 else ""}</th>'
        '<th class="delta">vs median</th></tr></thead>'
    )
    by_stage: dict[int, list[JobReport]] = {}
    for job in report.jobs:
        by_stage.setdefault(job.stage_index or 0, []).append(job)
    bodies = [
        _stage_body(stage, by_stage.get(stage.index, []), ticks, span_s) for stage in report.stages
    ]
    return f'<table class="timeline">{head}{"".join(bodies)}</table>\n'


def _stage_body(stage: StageInfo, jobs: list[JobReport], ticks: list[float], span_s: float) -> str:
    kind = stage.execution_type or "kind unknown"
    if stage.execution_type == "parallel" and stage.max_parallel:
        kind += f", at most {stage.max_parallel} at once"
    if not stage.enabled:
        kind += ", skipped (execution_flag n)"
    title = f"Stage {stage.index + 1} · {kind}"
    if stage.description:
        title += f" · {stage.description}"
    rows = "".join(_job_row(job, ticks, span_s) for job in jobs)
    return (
        f'<tbody class="stage" data-stage="{stage.index}"><tr class="stage-head">'
        f'<th colspan="5">{_e(title)}</th></tr>{rows}</tbody>'
    )


def _job_row(job: JobReport, ticks: list[float], span_s: float) -> str:
    name = _e(job.job)
    if job.log_url:
        name = f'<a href="{_e(job.log_url)}" target="_blank" rel="noopener noreferrer">{name}</a>'
    mark = '<span class="crit-mark" title="on the critical path">◆</span>' if job.critical else ""
    grid = "".join(
        f'<line class="grid" x1="{_pct(t / span_s)}" x2="{_pct(t / span_s)}" y1="0" y2="100%"/>'
        for t in ticks
    )
    duration = job.row.get(J.DURATION_MS)
    shown = format_duration(duration / 1000) if isinstance(duration, int) else "-"
    return (
        f'<tr class="job" data-job="{_e(job.job)}" data-status="{_e(job.status)}" '
        f'data-critical="{str(job.critical).lower()}"><td class="name">{mark}{name}</td>'
        f'<td class="track"><svg class="lane" width="100%" height="22">{grid}{_bar(job, span_s)}'
        f'</svg></td><td class="dur">{shown}</td><td class="spark">{_sparkline(job.history)}</td>'
        f"{_delta(job.history)}</tr>"
    )


def _bar(job: JobReport, span_s: float) -> str:
    if job.span is None:
        return ""
    left = job.span.start_s / span_s
    width = max((job.span.end_s - job.span.start_s) / span_s, MIN_BAR_PCT / 100)
    classes = f"bar s-{job.status}" + (" crit" if job.critical else "")
    tip = _e(_tip(job))
    return (
        f'<rect class="{_e(classes)}" data-job="{_e(job.job)}" x="{_pct(left)}" y="4" '
        f'width="{_pct(width)}" height="14" rx="2" data-tip="{tip}" aria-label="{tip}"/>'
    )


def _tip(job: JobReport) -> str:
    row = job.row
    duration = row.get(J.DURATION_MS)
    host = row.get(J.INSTANCE_ID) or "-"
    worker = row.get(J.WORKER_NAME)
    lines = [
        f"{job.job}: {job.status}" + (" (critical path)" if job.critical else ""),
        f"host: {host}" + (f" ({worker})" if worker and worker != host else ""),
        "duration: " + (format_duration(duration / 1000) if isinstance(duration, int) else "-"),
        f"exit code: {row.get(J.EXIT_CODE, '-')}",
        f"attempts: {row.get(J.ATTEMPT, '-')}",
        f"started: {row.get(J.EXECUTION_START_TS, '-')}",
        f"ended: {row.get(J.EXECUTION_END_TS, '-')}",
    ]
    if row.get(J.ERROR):
        lines.append(f"error: {row[J.ERROR]}")
    return "\n".join(lines)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.4f}%"


def _axis(ticks: list[float], span_s: float) -> str:
    labels = []
    for t in ticks:
        anchor = "start" if t == 0 else "middle"
        x = _pct(t / span_s)
        labels.append(f'<text x="{x}" y="14" text-anchor="{anchor}">{_e(_tick_label(t))}</text>')
    return f'<svg class="axis" width="100%" height="18">{"".join(labels)}</svg>'


def _ticks(span_s: float) -> list[float]:
    """Round seconds from 0 to the end of the run, at most `_MAX_TICKS` of them."""
    step = next((s for s in _TICK_STEPS_S if span_s / s <= _MAX_TICKS), None)
    if step is None:
        step = 3600 * math.ceil(span_s / 3600 / _MAX_TICKS)
    count = int(span_s / step + 1e-9)
    return [round(i * step, 6) for i in range(count + 1)]


def _tick_label(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 60:
        return f"{seconds:g} s"
    return format_duration(seconds)


def _sparkline(points: list[Point]) -> str:
    """The job's duration in each of the last runs, oldest to newest (this run last); one x
    per run, so a column is the same run in every row."""
    values = [p.duration_ms for p in points]
    known = [v for v in values if v is not None]
    data = ",".join("" if v is None else str(v) for v in values)
    svg = f'<svg class="sparkline" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" '
    svg += f'data-durations-ms="{data}">'
    if not known:
        return f"{svg}</svg>"
    top = max(known) or 1
    step = (SPARK_WIDTH - 2 * _SPARK_PAD) / max(len(points) - 1, 1)

    def xy(i: int, value: int) -> tuple[float, float]:
        usable = SPARK_HEIGHT - 2 * _SPARK_PAD
        return _SPARK_PAD + i * step, SPARK_HEIGHT - _SPARK_PAD - usable * value / top

    segments: list[list[str]] = [[]]
    dots = []
    for i, point in enumerate(points):
        if point.duration_ms is None:
            segments.append([])
            continue
        x, y = xy(i, point.duration_ms)
        segments[-1].append(f"{x:.1f},{y:.1f}")
        last = " now" if i == len(points) - 1 else ""
        tip = _e(
            f"{point.execution_id}: {format_duration(point.duration_ms / 1000)}, {point.status}"
        )
        dots.append(
            f'<circle class="pt s-{_e(point.status)}{last}" cx="{x:.1f}" cy="{y:.1f}" '
            f'r="{3 if last else 2}" data-tip="{tip}"/>'
        )
    lines = "".join(f'<polyline points="{" ".join(s)}"/>' for s in segments if len(s) > 1)
    return f"{svg}{lines}{''.join(dots)}</svg>"


def _delta(points: list[Point]) -> str:
    """This run's duration against the median of the earlier runs that completed."""
    if not points or points[-1].duration_ms is None:
        return '<td class="delta">-</td>'
    earlier = [
        p.duration_ms
        for p in points[:-1]
        if p.duration_ms is not None and p.status == schema.COMPLETED
    ]
    if not earlier:
        return '<td class="delta">-</td>'
    median = statistics.median(earlier)
    if median <= 0:
        return '<td class="delta">-</td>'
    ratio = points[-1].duration_ms / median
    verdict = "slower" if ratio >= SLOWER_RATIO else "faster" if ratio <= 1 / SLOWER_RATIO else ""
    return (
        f'<td class="delta {verdict}" data-ratio="{ratio:.3f}" '
        f'title="median of {len(earlier)} earlier runs: {_e(format_duration(median / 1000))}">'
        f"{_percent(ratio - 1)}</td>"
    )


def _percent(change: float) -> str:
    shown = round(change * 100)
    return "±0%" if shown == 0 else f"{shown:+d}%"
