"""The chaos soak's faults, drawn from one seeded random generator.

Every second the schedule may start a fault on a host: a network cut (5 to 120 s, the
proxy swallows everything), slow responses, reset connections (answers lost after the
emulator acted), a kill -9 or a SIGTERM of its agent (which comes back a few seconds later).
Each kind happens at least once per soak, spread over its first two thirds. At least two
hosts stay reachable and running at any time, so the work goes on. `lift_all` ends every
fault and brings every agent back, for the checks at the end.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from bench.chaos_fleet import Host

KINDS: Final = ("cut", "slow", "resets", "kill9", "sigterm")
# Faults that take a host out of the work (the others only make it slow or lossy).
HARD: Final = frozenset({"cut", "kill9", "sigterm"})
# Chance per second that a fault starts (besides the one of each kind that is scheduled).
FAULTS_PER_S: Final = 0.12
CUT_S: Final = (5.0, 120.0)
SLOW_S: Final = (5.0, 30.0)
SLOW_DELAY_S: Final = (0.2, 2.0)
RESET_RATE: Final = (0.05, 0.2)
BACK_AFTER_S: Final = (1.0, 10.0)
MIN_HEALTHY_HOSTS: Final = 2


_UNDO: Final = {
    "cut": "restore",
    "slow": "unslow",
    "resets": "unreset",
    "kill9": "restart",
    "sigterm": "restart",
}


@dataclass
class Event:
    at_s: float
    host: str
    kind: str
    detail: str
    until_s: float = 0.0  # when it was undone (the agent back, the network restored)


@dataclass
class _Pending:
    """Something to undo later: a fault to end, or an agent to start again."""

    due: float
    host: Host
    action: str  # "restore", "unslow", "unreset", "restart"


@dataclass
class Chaos:
    hosts: list[Host]
    rng: random.Random
    soak_s: float
    started: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    cut_seconds: float = 0.0
    _pending: list[_Pending] = field(default_factory=list)
    _planned: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # One of each kind at a random moment in the first two thirds of the soak.
        self._planned = sorted((self.rng.uniform(0.05, 0.66) * self.soak_s, k) for k in KINDS)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def tick(self) -> None:
        """Undo what is due, then maybe start a fault."""
        now = self.elapsed()
        for pending in [p for p in self._pending if p.due <= now]:
            self._pending.remove(pending)
            self._undo(pending)
        for planned in [p for p in self._planned if p[0] <= now]:
            # A planned fault that cannot happen yet (too many hosts down) waits its turn.
            if self._start(planned[1], now):
                self._planned.remove(planned)
                return
        if now < self.soak_s and self.rng.random() < FAULTS_PER_S:
            self._start(self.rng.choice(KINDS), now)

    def lift_all(self) -> None:
        """End every fault and start every agent that is down (after its drain, if any)."""
        pending, self._pending = self._pending, []
        for item in pending:
            if item.action == "restart" and item.host.process is not None:
                item.host.process.wait()  # a SIGTERM'd agent drains within its timeout
            else:
                self._undo(item)
        for host in self.hosts:
            if not host.running:
                host.start()

    def _candidates(self, kind: str) -> list[Host]:
        """Hosts `kind` may hit now: running, not out of the work already, not under the
        same fault; a hard fault only while MIN_HEALTHY_HOSTS others stay in the work."""
        out = {p.host.name for p in self._pending if p.action in ("restore", "restart")}
        same = {p.host.name for p in self._pending if p.action == _UNDO[kind]}
        hosts = [h for h in self.hosts if h.running and h.name not in out | same]
        if kind in HARD and len(self.hosts) - len(out) - 1 < MIN_HEALTHY_HOSTS:
            return []
        return hosts

    def _start(self, kind: str, now: float) -> bool:
        candidates = self._candidates(kind)
        if not candidates:
            return False
        host = self.rng.choice(candidates)
        left_s = max(5.0, self.soak_s - now)
        detail = getattr(self, f"_{kind}")(host, now, left_s)
        self.counts[kind] += 1
        self.events.append(Event(round(now, 1), host.name, kind, detail, self._pending[-1].due))
        return True

    def _cut(self, host: Host, now: float, left_s: float) -> str:
        # 5 to 120 s; in a short soak at most a quarter of it, so every kind of fault fits.
        longest = max(CUT_S[0], min(CUT_S[1], self.soak_s / 4))
        length = min(self.rng.uniform(CUT_S[0], longest), left_s)
        host.proxy.cut()
        self.cut_seconds += length
        self._pending.append(_Pending(now + length, host, "restore"))
        return f"{length:.0f} s"

    def _slow(self, host: Host, now: float, left_s: float) -> str:
        delay = self.rng.uniform(*SLOW_DELAY_S)
        host.proxy.set_delay(delay)
        self._pending.append(_Pending(now + min(self.rng.uniform(*SLOW_S), left_s), host, "unslow"))
        return f"{delay:.1f} s per response"

    def _resets(self, host: Host, now: float, left_s: float) -> str:
        rate = self.rng.uniform(*RESET_RATE)
        host.proxy.set_reset_rate(rate)
        length = min(self.rng.uniform(*SLOW_S), left_s)
        self._pending.append(_Pending(now + length, host, "unreset"))
        return f"{rate:.0%} of responses for {length:.0f} s"

    def _kill9(self, host: Host, now: float, left_s: float) -> str:
        host.signal(signal.SIGKILL)
        self._pending.append(_Pending(now + self.rng.uniform(*BACK_AFTER_S), host, "restart"))
        return f"life {host.lives}"

    def _sigterm(self, host: Host, now: float, left_s: float) -> str:
        host.signal(signal.SIGTERM)
        self._pending.append(_Pending(now + self.rng.uniform(*BACK_AFTER_S), host, "restart"))
        return f"life {host.lives}"

    def _undo(self, pending: _Pending) -> None:
        host = pending.host
        if pending.action == "restore":
            host.proxy.restore()
        elif pending.action == "unslow":
            host.proxy.set_delay(0.0)
        elif pending.action == "unreset":
            host.proxy.set_reset_rate(0.0)
        elif pending.action == "restart":
            if host.running:  # a SIGTERM'd agent still draining: come back for it later
                self._pending.append(_Pending(self.elapsed() + 1.0, host, "restart"))
            else:
                host.start()
