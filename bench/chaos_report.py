"""The chaos soak's verdicts and the summary it prints."""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench import chaos_checks as checks
from bench.chaos_checks import Run, Verdict
from cloud.emulator.faults import STATS_PATH

if TYPE_CHECKING:
    from bench.chaos import Soak

RETRYABLE = ("Agent.ShuttingDown", "States.Timeout")


def verdicts(soak: Soak) -> list[Verdict]:
    sfn = soak.stack.aws.sfn
    for run in soak.runs:
        run.attempts = checks.attempts(checks.history(sfn, run.arn))
    return [
        _all_succeeded(soak.runs),
        _no_row_running(soak),
        _no_overlap(soak),
        _every_line(soak),
        _every_attempt(soak),
        _ran_twice(soak),
    ]


def _all_succeeded(runs: list[Run]) -> Verdict:
    failed = [f"{r.name}: {r.status}" for r in runs if r.status != "SUCCEEDED"]
    detail = f"{len(runs) - len(failed)}/{len(runs)} executions"
    return Verdict("every execution SUCCEEDED", not failed and bool(runs), detail, failed)


def _no_row_running(soak: Soak) -> Verdict:
    table = soak.emulator.env["RSQL_AGENT_JOB_AUDIT_TABLE"]
    statuses: Counter[str] = Counter()
    notes = []
    for run in soak.runs:
        for job, row in checks.audit_rows(soak.stack.aws.dynamodb, table, run).items():
            status = row.get("execution_status", "missing")
            statuses[status] += 1
            if status != "Completed":
                notes.append(f"{job} of {run.name}: {status}")
    held = statuses["Running"] == 0 and not notes
    return Verdict(
        "no job row left Running", held, checks.count_by(list(statuses.elements())), notes
    )


def _no_overlap(soak: Soak) -> Verdict:
    seen = {(o.execution_id, o.job_name, o.hosts) for o in soak.monitor.overlaps}
    notes = [f"{job} of {execution} on {', '.join(hosts)}" for execution, job, hosts in seen]
    detail = f"{soak.monitor.scans} scans of /proc"
    return Verdict("no job on two hosts at once", not seen, detail, sorted(notes))


def _every_line(soak: Soak) -> Verdict:
    logs = soak.stack.aws.logs
    group = soak.emulator.env["RSQL_AGENT_LOG_GROUP"]
    total = repeats = 0
    notes: list[str] = []
    for run in soak.runs:
        for job, tries in run.attempts.items():
            for attempt in tries:
                stream = f"{run.workflow_id}/{run.name}/{job}" + (
                    f"/{attempt.number}" if attempt.number > 1 else ""
                )
                lines, repeated, problems = checks.line_order(
                    checks.stream_lines(logs, group, stream), job
                )
                total += len(lines)
                repeats += repeated
                expected = _expected_lines(soak, run, job, attempt)
                if expected is not None and lines != expected:
                    problems.append(f"{len(lines)} lines where {len(expected)} were printed")
                notes += [f"{stream}: {p}" for p in problems]
    detail = f"{total} lines; {repeats} repeated where an answer was lost"
    return Verdict("every printed line in CloudWatch, in order", not notes, detail, notes[:20])


def _expected_lines(soak: Soak, run: Run, job: str, attempt: checks.Attempt) -> list[int] | None:
    """What the attempt printed: every line when it succeeded, else what its host's local
    file holds (None where that is unknown: no file, or the small disk's)."""
    if attempt.outcome == "succeeded":
        return list(range(1, soak.lines[job] + 1))
    name = f"{job}.{attempt.number}.log" if attempt.number > 1 else f"{job}.log"
    for host in soak.hosts:
        path: Path = host.log_dir / run.workflow_id / run.name / name
        if path.exists() and not host.small_disk:
            return [int(line.split()[3]) for line in path.read_text().splitlines()]
    return None


def _every_attempt(soak: Soak) -> Verdict:
    notes, reasons, count = [], [], 0
    for run in soak.runs:
        rows = checks.audit_rows(
            soak.stack.aws.dynamodb, soak.emulator.env["RSQL_AGENT_JOB_AUDIT_TABLE"], run
        )
        for job in run.jobs:
            tries = run.attempts.get(job, [])
            count += len(tries)
            numbers = [t.number for t in tries]
            if numbers != list(range(1, len(tries) + 1)):
                notes.append(f"{job} of {run.name}: attempts numbered {numbers}")
            if not tries or tries[-1].outcome != "succeeded":
                notes.append(f"{job} of {run.name}: no attempt succeeded")
            for earlier in tries[:-1]:
                reasons.append(earlier.error)
                if earlier.error not in RETRYABLE:
                    notes.append(f"{job} of {run.name}: attempt {earlier.number} {earlier.error}")
            if rows[job].get("attempt") != len(tries):
                notes.append(f"{job} of {run.name}: row says attempt {rows[job].get('attempt')}")
    detail = f"{count} attempts; retried: {checks.count_by(reasons)}"
    return Verdict("every attempt accounted for", not notes, detail, notes[:20])


def _ran_twice(soak: Soak) -> Verdict:
    runs = checks.read_runs(soak.runs_file)
    by_name = {run.name: run for run in soak.runs}
    found = checks.ran_twice(runs, by_name, _faults_on(soak))
    starts = sum(1 for marks in runs.values() for m in marks if m.what == "start")
    detail = (
        f"{len(found.lines)} of {starts} script runs were a second run, {found.completed_twice} "
        f"completed twice (README, 'When a script can still run twice'); finished scripts "
        f"failed back by an agent: {len(found.finished_but_failed_back)}"
    )
    notes = found.lines + [
        f"FAILED BACK AFTER ITS END: {x}" for x in found.finished_but_failed_back
    ]
    return Verdict("scripts that ran twice", not found.finished_but_failed_back, detail, notes)


def _faults_on(soak: Soak) -> Callable[[str, float, float], str]:
    """`faults_on(host, since, until)`: the soak's faults on a host that overlap that window
    (epoch seconds)."""
    epoch_of_start = time.time() - soak.chaos.elapsed()

    def faults_on(host: str, since: float, until: float) -> str:
        hit = [
            f"{e.kind} at {e.at_s:.0f} s ({e.detail})"
            for e in soak.chaos.events
            if e.host == host
            and epoch_of_start + e.at_s <= until
            and epoch_of_start + e.until_s >= since
        ]
        return ", ".join(hit)

    return faults_on


def emulator_faults(soak: Soak) -> dict[str, int]:
    """What the emulator's fault injector answered (cloud/emulator/faults.py)."""
    url = f"{soak.emulator.endpoint_url}{STATS_PATH}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        counts: dict[str, int] = json.loads(answer.read())
    return counts


def report(soak: Soak, results: list[Verdict]) -> str:
    chaos = soak.chaos
    proxies = [h.proxy.stats for h in soak.hosts]
    emulated = emulator_faults(soak)
    disk = sum(
        _count_event(h.outputs(), "local_log_unwritable") for h in soak.hosts if h.small_disk
    )
    small = [h.name for h in soak.hosts if h.small_disk]
    out = [
        f"rsql chaos soak: seed {soak.seed}, {soak.duration_s:g} s, {len(soak.hosts)} agents, "
        f"heartbeat {soak.heartbeat_s:g} s, emulator fault rate {soak.fault_rate:g}",
        "faults injected:",
        f"  network cuts         {chaos.counts['cut']} ({chaos.cut_seconds:.0f} s in all, "
        f"{sum(p.cut_connections for p in proxies)} connections caught)",
        f"  slow responses       {chaos.counts['slow']} periods "
        f"({sum(p.responses_delayed for p in proxies)} responses delayed)",
        f"  reset connections    {chaos.counts['resets']} periods "
        f"({sum(p.responses_dropped for p in proxies)} answers lost after the emulator acted)",
        f"  kill -9              {chaos.counts['kill9']}",
        f"  SIGTERM              {chaos.counts['sigterm']}",
        f"  ThrottlingException  {emulated.get('ThrottlingException', 0)} (emulator)",
        f"  HTTP 500             {emulated.get('InternalFailure', 0)} (emulator)",
        "  full local disk      "
        + (
            f"{', '.join(small)} (256 KB tmpfs): {disk} local_log_unwritable warnings"
            if small
            else "not run: cannot mount a tmpfs here"
        ),
        f"work: {len(soak.runs)} executions, "
        f"{sum(len(r.jobs) for r in soak.runs)} jobs, "
        f"{sum(h.lives for h in soak.hosts)} agent lives",
    ]
    out.append("time: " + _phases(soak.phases))
    out.append("invariants:")
    for verdict in results:
        out.append(f"  {'PASS' if verdict.held else 'FAIL'}  {verdict.name}: {verdict.detail}")
        out += [f"        {note}" for note in verdict.notes]
    out.append("events: " + json.dumps([(e.at_s, e.host, e.kind, e.detail) for e in chaos.events]))
    return "\n".join(out)


def _phases(phases: dict[str, float]) -> str:
    marks = list(phases.items())
    return ", ".join(
        f"{name} {at - before:.0f} s" for (_, before), (name, at) in itertools.pairwise(marks)
    )


def _count_event(outputs: list[Path], event: str) -> int:
    count = 0
    for path in outputs:
        for line in path.read_bytes().splitlines():
            if line.startswith(b"{") and f'"event": "{event}"'.encode() in line:
                count += 1
    return count
