"""The capacity model behind docs/capacity.md: calls per second a fleet makes to each API,
against the published default quotas (per account, per Region).

Inputs are measured calls per job (`python -m bench.run --only cost` prints them in its JSON
line; `--from-json` reads that line) and the agent's defaults; the fleet runs every slot
full: jobs/s = hosts x concurrency / job length. Prints the Markdown that docs/capacity.md
holds.

    python -m bench.capacity
    python -m bench.run --only cost | tail -1 > cost.json
    python -m bench.capacity --from-json cost.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

HOSTS = (10, 100, 1000)
JOB_S = (10.0, 60.0, 600.0)
CONCURRENCY = 8
POLLERS = 2
HEARTBEAT_INTERVAL_S = 20.0  # the agent's default: a third of the default HeartbeatSeconds 60
# Measured by `bench.cost` (a job printing a line at its start and one at its end). A job
# that prints nothing costs no CreateLogStream and no PutLogEvents; one that prints all the
# time costs a PutLogEvents a second (log_flush_interval_s).
MEASURED_PER_JOB: dict[str, float] = {
    "SendTaskSuccess": 1.0,
    "UpdateItem": 2.0,
    "CreateLogStream": 1.0,
    "PutLogEvents": 2.0,
}
# State transitions each job adds (its Task state in the Map); a run adds ~19 more.
TRANSITIONS_PER_JOB = 1.0

SFN_QUOTAS = "https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html"
LOGS_QUOTAS = "https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/cloudwatch_limits_cwl.html"
DDB_ON_DEMAND = (
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/on-demand-capacity-mode.html"
)


@dataclass(frozen=True)
class Quota:
    """A sustained rate per second (a token bucket's refill rate), where it is published."""

    api: str
    per_s: float
    source: str
    note: str


# Defaults for US East (N. Virginia), US West (Oregon) and Europe (Ireland); other Regions
# are lower (see the pages). Quotas change: check the Service Quotas console of the account.
QUOTAS = (
    Quota("GetActivityTask", 500, SFN_QUOTAS, "bucket 3,000; other Regions 300/s"),
    Quota("SendTaskHeartbeat", 500, SFN_QUOTAS, "bucket 3,000; other Regions 300/s"),
    Quota("SendTaskSuccess/Failure", 500, SFN_QUOTAS, "bucket 3,000; other Regions 300/s"),
    Quota("StateTransition", 1500, SFN_QUOTAS, "bucket 5,000; other Regions 500/s"),
    Quota("CreateLogStream", 50, LOGS_QUOTAS, "adjustable"),
    Quota("PutLogEvents", 1500, LOGS_QUOTAS, "adjustable; 800/s in other Regions"),
    Quota("UpdateItem (WRU)", 4000, DDB_ON_DEMAND, "new on-demand table; 40,000 after scaling"),
)


def rates(hosts: int, job_s: float, per_job: dict[str, float]) -> dict[str, float]:
    """Calls per second of the whole fleet to each API, every slot busy."""
    running = hosts * CONCURRENCY
    jobs_per_s = running / job_s
    beats_per_job = math.floor(job_s / HEARTBEAT_INTERVAL_S)
    return {
        # One poll returns each task; the polls a busy host keeps open return at once.
        "GetActivityTask": jobs_per_s,
        "SendTaskHeartbeat": jobs_per_s * beats_per_job,
        "SendTaskSuccess/Failure": jobs_per_s * per_job["SendTaskSuccess"],
        "StateTransition": jobs_per_s * TRANSITIONS_PER_JOB,
        "CreateLogStream": jobs_per_s * per_job["CreateLogStream"],
        "PutLogEvents": jobs_per_s * per_job["PutLogEvents"],
        "UpdateItem (WRU)": jobs_per_s * per_job["UpdateItem"],
    }


def render(per_job: dict[str, float]) -> str:
    """The Markdown tables of docs/capacity.md."""
    out = [
        f"Fleet at full load: every host runs {CONCURRENCY} jobs at once, back to back. "
        "Each cell: calls per second / the default quota, and its share of it; "
        "**bold** = over the quota.",
        "",
    ]
    header = "| API (quota/s) | " + " | ".join(
        f"{h} hosts, {_length(j)} jobs" for j in JOB_S for h in HOSTS
    )
    out += [header + " |", "|---" * (1 + len(HOSTS) * len(JOB_S)) + "|"]
    for quota in QUOTAS:
        cells = []
        for job_s in JOB_S:
            for hosts in HOSTS:
                value = rates(hosts, job_s, per_job)[quota.api]
                share = value / quota.per_s
                text = f"{value:,.1f} ({share:.0%})"
                cells.append(f"**{text}**" if share > 1 else text)
        out.append(f"| {quota.api} ({quota.per_s:,.0f}) | " + " | ".join(cells) + " |")
    out += ["", "What binds first, by fleet and job length:", ""]
    for job_s in JOB_S:
        for hosts in HOSTS:
            fleet = rates(hosts, job_s, per_job)
            share, api = max((fleet[q.api] / q.per_s, q.api) for q in QUOTAS)
            out.append(f"- {hosts} hosts, {_length(job_s)} jobs: {api} at {share:.0%} of its quota")
    out += [
        "",
        f"Open polls (a concurrency quota, not a rate): an idle fleet keeps {POLLERS} per host "
        f"open, {HOSTS[-1] * POLLERS:,} at {HOSTS[-1]:,} hosts against 1,000 per activity.",
    ]
    return "\n".join(out)


def _length(job_s: float) -> str:
    return f"{job_s:.0f} s" if job_s < 60 else f"{job_s / 60:.0f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--from-json", help="a `bench.run` JSON line with the cost benchmark")
    options = parser.parse_args(argv)
    per_job = dict(MEASURED_PER_JOB)
    if options.from_json:
        with open(options.from_json) as source:
            measured: dict[str, Any] = json.loads(source.read().strip().splitlines()[-1])
        per_job.update(measured["cost"]["calls_per_job"])
    print(render(per_job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
