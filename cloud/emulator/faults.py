"""Injected AWS errors, for the chaos soak: a share of the agents' calls is answered with
`ThrottlingException` (HTTP 400) or `InternalFailure` (HTTP 500) before the emulator serves it,
as AWS does under load. `rsql-cloud emulator --fault-rate 0.05` turns it on.

Only the agents' calls are hit (their User-Agent carries `rsql-agent/`, see agent/aws.py): the
state machine's own service calls (DynamoDB, SNS) and the operator's `rsql-cloud` are served
as usual, so a soak measures what the agent does about faults, not the state machine's Retry
policy. The request is never served when it is faulted, so a fault here is always safe to
retry; answers lost after the work was done are the FaultProxy's job.

`GET /_rsql/faults` answers the counts so far as JSON.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

AGENT_USER_AGENT: Final = "rsql-agent/"
STATS_PATH: Final = "/_rsql/faults"
# (HTTP status, error code, message) of each kind of fault, AWS's JSON-protocol error shape.
FAULTS: Final = (
    ("400 Bad Request", "ThrottlingException", "Rate exceeded"),
    ("500 Internal Server Error", "InternalFailure", "Injected by the rsql emulator"),
)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class FaultInjector:
    """WSGI middleware: answers `rate` of the agents' requests with an AWS error."""

    def __init__(self, app: WsgiApp, rate: float, seed: int | None = None) -> None:
        if not 0 <= rate <= 1:
            raise ValueError("the fault rate is a share between 0 and 1")
        self._app = app
        self._rate = rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == STATS_PATH:
            return _json(start_response, "200 OK", dict(self.counts))
        if AGENT_USER_AGENT in str(environ.get("HTTP_USER_AGENT", "")):
            fault = self._draw()
            if fault is not None:
                status, code, message = fault
                target = str(environ.get("HTTP_X_AMZ_TARGET", "")).rsplit(".", 1)[-1]
                with self._lock:
                    self.counts[code] += 1
                    self.counts[f"{code}:{target}"] += 1
                return _json(start_response, status, {"__type": code, "message": message})
        return self._app(environ, start_response)

    def _draw(self) -> tuple[str, str, str] | None:
        with self._lock:
            if self._rng.random() >= self._rate:
                return None
            return self._rng.choice(FAULTS)


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("Content-Length", str(len(data))),
            ("x-amzn-RequestId", "rsql-emulator-injected-fault"),
        ],
    )
    return [data]
