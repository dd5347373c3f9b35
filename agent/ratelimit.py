"""Client-side call rates, one token bucket per AWS API (docs/capacity.md says why each).

Every host of a fleet draws on the same per-account, per-Region quotas. A host smooths its own
bursts (a stage of 8 jobs ending at once) so they do not drain the account's bucket for the
others; the defaults are a per-host share of the published quotas, small enough that tens of
hosts at full speed stay inside them. `RSQL_AGENT_AWS_RATES_PER_S` overrides any of them
(`{"CreateLogStream": 2}`), for a fleet large enough to need a smaller share. A call over its
rate waits for a token; it is never refused.

The bucket is our own rather than asyncio-throttle's Throttler: that one counts whole calls per
period (no `0.5` a second) and its waiters poll every 10 ms, 1.65x the CPU of these timed
sleeps for 300 calls held at 100 a second (measured on the development machine).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Final

# Calls per second one host may make, by API. Absent: only the overall cap applies.
DEFAULT_RATES_PER_S: Final[Mapping[str, float]] = {
    "SendTaskHeartbeat": 50.0,
    "SendTaskSuccess": 50.0,
    "SendTaskFailure": 50.0,
    "UpdateItem": 100.0,
    "GetItem": 100.0,
    "PutLogEvents": 100.0,
    # 50 per second per account (CloudWatch Logs), the tightest quota the agent meets. Half
    # of it: a job's completion waits (up to `log_flush_wait_s`) for its final flush, so for
    # its stream.
    "CreateLogStream": 25.0,
    "CreateLogGroup": 1.0,
}


def api_name(method_name: str) -> str:
    """`send_task_heartbeat` (a boto3 client method) -> `SendTaskHeartbeat` (the API)."""
    return "".join(part.title() for part in method_name.split("_"))


class TokenBucket:
    """`rate_per_s` tokens a second, at most `rate_per_s` (one second's worth) saved up."""

    def __init__(self, rate_per_s: float) -> None:
        self._rate = rate_per_s
        self._capacity = max(1.0, rate_per_s)
        self._tokens = self._capacity
        self._stamp = time.monotonic()

    async def take(self) -> None:
        """Take one token, waiting for it if there is none."""
        while True:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self._rate)


class RateLimits:
    """A bucket per API (defaults merged with `overrides`) plus one over all calls."""

    def __init__(self, overall_per_s: float, overrides: Mapping[str, float]) -> None:
        rates = {**DEFAULT_RATES_PER_S, **overrides}
        self._buckets = {name: TokenBucket(rate) for name, rate in rates.items()}
        self._overall = TokenBucket(overall_per_s)

    async def take(self, api: str) -> None:
        bucket = self._buckets.get(api)
        if bucket is not None:
            await bucket.take()
        await self._overall.take()
