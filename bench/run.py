"""`make bench`: what the agent costs, each figure beside a baseline measured in the same run.

Benchmarks (each on a fresh local emulator; see their modules):

- dispatch (`bench.dispatch`): silent jobs in one parallel stage; agent CPU per job against
  the minimal reference worker (`bench.reference_worker`) and a bare `subprocess.run`
  launcher, jobs per second, dispatch latency p50/p99;
- idle, memory, logs (`bench.phases`): API calls and CPU with nothing queued, RSS idle and
  with 64 jobs running, one job printing a million lines;
- cost (`bench.cost`): state transitions and API calls per job through the real stack,
  heartbeats per job-minute.

It prints a table and then one JSON line with every figure. The emulator shares the machine's
cores with the agent (and, on a shared machine, with whatever else runs): compare figures
within one run, repeat runs, and read the load average printed with them. Exit 1 if a run
failed or a correctness figure (lines received in order) is wrong; speed targets are reported,
not enforced.

    python -m bench.run                   # everything, ~7-9 minutes on 2 cores
    python -m bench.run --only dispatch --rounds 3
    python -m bench.run --agent-source /path/to/other/checkout   # measure another version
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common, cost, dispatch, phases

PHASES = ("dispatch", "idle", "memory", "logs", "cost")


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    if options.agent_source:
        common.AGENT_SOURCE = Path(options.agent_source).resolve()
    root = Path(tempfile.mkdtemp(prefix="rsql-bench-"))
    started = time.monotonic()
    results: dict[str, Any] = {"load_before": common.load_average()}
    try:
        results.update(_run(root, options))
    finally:
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)
    results["load_after"] = common.load_average()
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["agent_source"] = str(common.AGENT_SOURCE)
    print()
    print(render_table(results))
    print(json.dumps(_rounded(results), separators=(",", ":")))
    return 0 if _correct(results) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0],
        epilog="example:\n  python -m bench.run --only dispatch,logs --rounds 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=",".join(PHASES), help="benchmarks to run (comma list)")
    parser.add_argument("--jobs", type=int, default=500, help="dispatch: jobs (default 500)")
    parser.add_argument("--concurrency", type=int, default=32, help="dispatch: slots (32)")
    parser.add_argument("--rounds", type=int, default=1, help="dispatch: repeat, report ranges")
    parser.add_argument("--log-lines", type=int, default=1_000_000, help="logs: lines printed")
    parser.add_argument("--idle-window", type=float, default=120.0, help="idle: seconds watched")
    parser.add_argument("--cost-job-s", type=float, default=cost.JOB_S, help="cost: job length")
    parser.add_argument("--agent-source", help="checkout to import the agent from")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


def _run(root: Path, options: argparse.Namespace) -> dict[str, Any]:
    only = set(options.only.split(","))
    unknown = only - set(PHASES)
    if unknown:
        raise SystemExit(f"bench: unknown benchmark(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {}
    if "dispatch" in only:
        results["dispatch"] = _dispatch(root / "dispatch", options)
    wanted = only & {"idle", "memory", "logs"}
    if wanted:
        results.update(
            phases.run_all(root / "phases", options.idle_window, options.log_lines, wanted)
        )
    if "cost" in only:
        print("cost ...", flush=True)
        results["cost"] = cost.run(root / "cost", options.cost_job_s)
    return results


def _dispatch(root: Path, options: argparse.Namespace) -> dict[str, Any]:
    jobs, slots = options.jobs, options.concurrency
    bare_ms = dispatch.bare_launcher_cpu_ms(common.Workdir(root / "bare"), jobs)
    rounds: dict[str, list[dict[str, Any]]] = {"reference": [], "agent": []}
    for number in range(options.rounds):
        # Alternate which goes first, so neither always meets the machine in the same state.
        order = ["reference", "agent"] if number % 2 == 0 else ["agent", "reference"]
        for name in order:
            print(f"dispatch round {number + 1}: {name} ...", flush=True)
            runner = dispatch.run_reference if name == "reference" else dispatch.run_agent
            rounds[name].append(runner(root / f"{name}-{number}", jobs, slots).as_dict())
    return {"jobs": jobs, "concurrency": slots, "bare_cpu_ms_per_job": bare_ms, **rounds}


def _correct(results: dict[str, Any]) -> bool:
    statuses = [
        run["status"]
        for name in ("reference", "agent")
        for run in results.get("dispatch", {}).get(name, [])
    ]
    statuses += [results[name]["status"] for name in ("memory", "logs") if name in results]
    logs = results.get("logs")
    lines_ok = logs is None or (
        logs["in_order"] and logs["lines_received"] == logs["lines_printed"]
    )
    return lines_ok and all(status == "SUCCEEDED" for status in statuses)


def _span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if low == high or len(values) == 1 else f"{low:{fmt}}-{high:{fmt}}"


def render_table(results: dict[str, Any]) -> str:
    """The figures as a Markdown table: figure | measured | baseline (same run) | target."""
    rows: list[tuple[str, str, str, str]] = []
    if "dispatch" in results:
        rows += _dispatch_rows(results["dispatch"])
    if "logs" in results:
        logs = results["logs"]
        rows += [
            (
                "CloudWatch lines received / printed, in order",
                f"{logs['lines_received']:,} / {logs['lines_printed']:,} = "
                f"{logs['lines_received'] / logs['lines_printed']:.2f}, "
                f"{'in order' if logs['in_order'] else 'NOT in order'}",
                "1.0",
                "exactly 1.0",
            ),
            (
                "script wall under the agent / piped to a file",
                f"{logs['wall_under_agent_s']:.2f} s / {logs['wall_piped_s']:.2f} s = "
                f"{logs['wall_under_agent_s'] / logs['wall_piped_s']:.1f}x",
                "`| cat > file`",
                "<= 1.5x",
            ),
            (
                "agent CPU per 1M lines shipped",
                f"{logs['cpu_s_per_million']:.1f} s",
                f"cat: {logs['cat_cpu_s_per_million']:.2f} s",
                "<= 3 s",
            ),
            ("agent RSS growth while shipping", f"{logs['rss_growth_mb']:.1f} MB", "0", "flat"),
        ]
    if "memory" in results:
        memory = results["memory"]
        rows.append(
            (
                "agent RSS idle / with 64 jobs running",
                f"{memory['idle_mb']:.0f} / {memory['running_mb']:.0f} MB "
                f"({memory['jobs_running']} running)",
                "AWS sample: 2 x ~54 MB per job",
                "<= 70 / <= 100 MB",
            )
        )
    if "idle" in results:
        idle = results["idle"]
        rows.append(
            (
                "idle API calls per minute (polls + metrics) / agent CPU",
                f"{idle['api_calls_per_min']:.1f} ({idle['polls_per_min']:.1f} + "
                f"{idle['api_calls_per_min'] - idle['polls_per_min']:.1f}) / "
                f"{idle['cpu_ms_per_s']:.2f} ms/s",
                f"pollers: {idle['pollers']}",
                "polls <= pollers",
            )
        )
    if "cost" in results:
        c = results["cost"]
        rows += [
            (
                "state transitions per job",
                f"{c['transitions_per_job']:.2f}",
                f"{c['transitions_each_job_adds']:.0f} a job + {c['transitions_per_run']} a run",
                "n/a",
            ),
            (
                "heartbeat calls per job-minute",
                f"{c['heartbeats_per_job_minute']:.1f}",
                "3 (a beat every 20 s)",
                "n/a",
            ),
        ]
    lines = ["| figure | measured | baseline (same run) | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines.append(
        f"load average {results['load_before']:.1f} before, "
        f"{results.get('load_after', float('nan')):.1f} after (2 cores)"
    )
    return "\n".join(lines)


def _dispatch_rows(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    agent, ref = d["agent"], d["reference"]
    cpu_ratio = [a["cpu_ms_per_job"] / r["cpu_ms_per_job"] for a, r in zip(agent, ref, strict=True)]
    rate_ratio = [a["jobs_per_s"] / r["jobs_per_s"] for a, r in zip(agent, ref, strict=True)]
    label = f"{d['jobs']} silent jobs at concurrency {d['concurrency']}"
    return [
        (
            f"agent CPU per job / reference worker ({label})",
            f"{_span([a['cpu_ms_per_job'] for a in agent], '.2f')} ms = {_span(cpu_ratio, '.2f')}x",
            f"{_span([r['cpu_ms_per_job'] for r in ref], '.2f')} ms",
            "<= 1.5x",
        ),
        (
            "agent CPU per job / bare launcher",
            f"{_span([a['cpu_ms_per_job'] / d['bare_cpu_ms_per_job'] for a in agent], '.1f')}x",
            f"{d['bare_cpu_ms_per_job']:.2f} ms",
            "n/a",
        ),
        (
            "jobs/s / reference worker",
            f"{_span([a['jobs_per_s'] for a in agent], '.1f')} = {_span(rate_ratio, '.2f')}x",
            f"{_span([r['jobs_per_s'] for r in ref], '.1f')}",
            ">= 0.8x",
        ),
        (
            "emulator CPU per job (serving the worker's calls)",
            f"{_span([a['emulator_cpu_ms_per_job'] for a in agent], '.1f')} ms",
            f"reference: {_span([r['emulator_cpu_ms_per_job'] for r in ref], '.1f')} ms",
            "n/a",
        ),
        (
            "dispatch latency p50 / p99",
            f"{_span([a['latency_p50_ms'] for a in agent], '.0f')} / "
            f"{_span([a['latency_p99_ms'] for a in agent], '.0f')} ms",
            f"reference: {_span([r['latency_p50_ms'] for r in ref], '.0f')} / "
            f"{_span([r['latency_p99_ms'] for r in ref], '.0f')} ms",
            "<= 30 / <= 150 ms",
        ),
    ]


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
