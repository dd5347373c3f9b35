"""One warning a minute while AWS cannot be reached, not one per failed call.

During an outage every heartbeat, poll, log batch, audit write and completion fails and is
retried; logging each would bury the one fact that matters under thousands of lines. Every
call reports here instead: the first failure after a success logs `aws_unreachable` at once,
then at most one more every `warning_interval_s` (with how long it has lasted and how many calls
failed meanwhile), and the first success after failures logs `aws_reachable_again` with the
outage's length. Thread-safe: the long polls report from their own threads.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import structlog

log = structlog.get_logger(__name__)


class Outage:
    """Tracks whether AWS calls are failing, and says so at a bounded rate."""

    def __init__(self, warning_interval_s: float) -> None:
        self._interval_s = warning_interval_s
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic start of the current outage
        self._last_warning = 0.0
        self._failed: Counter[str] = Counter()  # failed calls by API since the last warning
        self._total = 0
        self.warnings = 0

    @property
    def active(self) -> bool:
        return self._since is not None

    def failed(self, call: str, error: str) -> None:
        """A call failed with a transient error (it will be retried)."""
        now = time.monotonic()
        with self._lock:
            if self._since is None:
                self._since = now
                self._last_warning = now - self._interval_s
                self._total = 0
            self._failed[call] += 1
            self._total += 1
            if now - self._last_warning < self._interval_s:
                return
            self._last_warning = now
            failed, self._failed = dict(self._failed), Counter()
            down_for_s = round(now - self._since, 1)
            self.warnings += 1
        log.warning(
            "aws_unreachable",
            error=error,
            down_for_s=down_for_s,
            failed_calls=failed,
            detail="retrying with backoff; nothing is dropped",
        )

    def succeeded(self) -> None:
        """A call got through: an outage, if there was one, is over."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            if self._since is None:
                return
            down_for_s = round(time.monotonic() - self._since, 1)
            total, self._since = self._total, None
            self._failed.clear()
        log.info("aws_reachable_again", down_for_s=down_for_s, failed_calls=total)
