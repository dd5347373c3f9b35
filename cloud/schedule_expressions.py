"""EventBridge Scheduler's schedule expressions: parsed, checked the way the service checks them,
and their run times computed, in the schedule's time zone.

    at(2026-12-24T18:00:00)   once, at that wall-clock time in the time zone
    rate(15 minutes)          every 15 minutes after the schedule's start (StartDate, else its
                              creation); units minute(s), hour(s), day(s), singular for 1
    cron(0 2 * * ? *)         AWS's six fields: minutes hours day-of-month month day-of-week
                              year, one of the two day fields `?`; day-of-week 1-7 = SUN-SAT

AWS cron is not Unix cron (six fields, `?`, 1-based days of week, `L`, `W`, `#`, a year), so
the fields are parsed and iterated by `aws-croniter` (MIT), which validates each field with a
message naming it. It works in UTC only: here it iterates wall-clock times, which this module
places in the time zone with the rules EventBridge Scheduler documents for daylight saving
time: a wall-clock time that does not exist (the clocks jump forward over it) is skipped, one
that exists twice (they fall back) runs once, at its first occurrence. `rate(N days)` counts
24-hour days, as Scheduler does.

Used by `workflow validate`/`put` (refuse what the service would refuse), `workflow list`
(next run) and the emulator's scheduler (which runs are due).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from aws_croniter import AwsCroniter

UTC: Final = dt.UTC
_AT_RE: Final = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_RATE_RE: Final = re.compile(r"^rate\((\d+) ([a-z]+)\)$")
_CRON_RE: Final = re.compile(r"^cron\((.*)\)$")
_RATE_UNITS: Final = {"minute": 60, "hour": 3600, "day": 86400}
# Scheduler's limit on the expression's length.
MAX_EXPRESSION_LENGTH: Final = 256
# How far ahead a cron expression may first match before it counts as "never" (its year field
# reaches 2199; a gap of a few years, as with 29 February, is fine).
_NEVER_AFTER: Final = dt.timedelta(days=366 * 10)


# More than any zone's clocks ever fall back at once.
_FALL_BACK_MAX: Final = dt.timedelta(hours=3)


class ExpressionError(ValueError):
    """An expression the service would refuse; the message says why."""


@dataclass(frozen=True)
class Expression:
    """One parsed schedule expression."""

    text: str
    kind: Literal["at", "rate", "cron"]
    at: dt.datetime | None = None  # naive wall-clock time (at)
    every: dt.timedelta | None = None  # rate
    cron: Any = None  # AwsCroniter (cron)

    @property
    def recurring(self) -> bool:
        return self.kind != "at"


def parse(text: str) -> Expression:
    """The expression, or ExpressionError saying what is wrong with it."""
    if not isinstance(text, str) or not text:
        raise ExpressionError("must be at(...), rate(...) or cron(...)")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"is longer than {MAX_EXPRESSION_LENGTH} characters")
    if text.startswith("at("):
        return _parse_at(text)
    if text.startswith("rate("):
        return _parse_rate(text)
    if text.startswith("cron("):
        return _parse_cron(text)
    raise ExpressionError(
        f"{text!r} is not at(yyyy-mm-ddThh:mm:ss), rate(value unit) or cron(six fields)"
    )


def _parse_at(text: str) -> Expression:
    match = _AT_RE.match(text)
    if not match:
        raise ExpressionError(f"{text!r}: an at expression is at(yyyy-mm-ddThh:mm:ss)")
    try:
        moment = dt.datetime.fromisoformat(match.group(1))
    except ValueError as exc:
        raise ExpressionError(f"{text!r}: not a date and time: {exc}") from None
    return Expression(text, "at", at=moment)


def _parse_rate(text: str) -> Expression:
    match = _RATE_RE.match(text)
    if not match:
        raise ExpressionError(
            f"{text!r}: a rate expression is rate(value unit), e.g. rate(15 minutes)"
        )
    value, unit = int(match.group(1)), match.group(2)
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS:
        raise ExpressionError(f"{text!r}: the unit must be minute(s), hour(s) or day(s)")
    if value < 1:
        raise ExpressionError(f"{text!r}: the value must be a positive integer")
    if value == 1 and unit != singular:
        raise ExpressionError(f"{text!r}: with the value 1 the unit is singular ({singular})")
    if value > 1 and unit == singular:
        raise ExpressionError(f"{text!r}: with a value above 1 the unit is plural ({unit}s)")
    return Expression(text, "rate", every=dt.timedelta(seconds=value * _RATE_UNITS[singular]))


def _parse_cron(text: str) -> Expression:
    match = _CRON_RE.match(text)
    fields = match.group(1) if match else ""
    if not match or fields != fields.strip() or "  " in fields:
        raise ExpressionError(f"{text!r}: a cron expression is cron(six fields, one space apart)")
    try:
        cron = AwsCroniter(fields)
    except Exception as exc:  # the library raises its own errors and ValueError
        reason = str(exc).replace("One must", " One must").replace("  ", " ")
        raise ExpressionError(f"{text!r}: {reason}") from None
    expression = Expression(text, "cron", cron=cron)
    probe = dt.datetime(1970, 1, 1, tzinfo=UTC)
    if _next_wall(expression, probe, inclusive=True) is None:
        raise ExpressionError(f"{text!r}: matches no date at all (check day, month and year)")
    return expression


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone, or ExpressionError."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ExpressionError(
            f"unknown time zone {name!r} (an IANA name such as 'UTC' or 'Europe/Berlin')"
        ) from None


# -- run times -----------------------------------------------------------------------------------


def runs_between(
    expression: Expression,
    timezone: str,
    after: dt.datetime,
    until: dt.datetime,
    *,
    start: dt.datetime | None = None,
) -> Iterator[dt.datetime]:
    """Run times (UTC) in `(after, until]`; `start` is where a rate schedule counts from."""
    zone = check_timezone(timezone)
    if expression.kind == "at":
        assert expression.at is not None
        moment = _place(expression.at, zone)
        if moment is not None and after < moment <= until:
            yield moment
    elif expression.kind == "rate":
        yield from _rate_runs(expression, after, until, start or after)
    else:
        yield from _cron_runs(expression, zone, after, until)


def next_run(
    expression: Expression,
    timezone: str,
    after: dt.datetime,
    *,
    start: dt.datetime | None = None,
) -> dt.datetime | None:
    """The first run (UTC) strictly after `after`; None when there is none."""
    horizon = after + _NEVER_AFTER
    return next(runs_between(expression, timezone, after, horizon, start=start), None)


def _rate_runs(
    expression: Expression, after: dt.datetime, until: dt.datetime, start: dt.datetime
) -> Iterator[dt.datetime]:
    assert expression.every is not None
    every = expression.every
    # The first run is one period after the start, then one every period.
    steps = 1 if after < start else (after - start) // every + 1
    moment = start + steps * every
    while moment <= until:
        if moment > after:
            yield moment
        moment += every


def _cron_runs(
    expression: Expression, zone: zoneinfo.ZoneInfo, after: dt.datetime, until: dt.datetime
) -> Iterator[dt.datetime]:
    # Wall-clock times from a little before `after`'s own (when the clocks fall back, the hour
    # before it comes again), each placed in the zone; those that do not exist are skipped.
    wall = after.astimezone(zone).replace(tzinfo=None) - _FALL_BACK_MAX
    while True:
        found = _next_wall(expression, wall.replace(tzinfo=UTC), inclusive=False)
        if found is None:
            return
        wall = found.replace(tzinfo=None)
        moment = _place(wall, zone)
        if moment is None or moment <= after:
            continue
        if moment > until:
            return
        yield moment


def _next_wall(
    expression: Expression, from_wall: dt.datetime, *, inclusive: bool
) -> dt.datetime | None:
    """The next matching wall-clock minute (as a UTC-labelled datetime) after `from_wall`."""
    probe = from_wall.replace(second=0, microsecond=0)
    limit = probe + _NEVER_AFTER
    # aws-croniter gives up on expressions that skip many months in a row (it returns None
    # after a few steps): ask again from where it stopped, up to the horizon.
    while probe <= limit:
        (found,) = expression.cron.get_next(probe, 1, inclusive=inclusive)
        if found is not None:
            return found  # type: ignore[no-any-return]
        probe = (probe.replace(day=1) + dt.timedelta(days=32)).replace(day=1, hour=0, minute=0)
        inclusive = True
    return None


def _place(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime | None:
    """A wall-clock time in the zone as UTC; None when the zone skips it. A time the zone
    has twice is its first occurrence (fold=0)."""
    local = wall.replace(tzinfo=zone, fold=0)
    moment = local.astimezone(UTC)
    if moment.astimezone(zone).replace(tzinfo=None) != wall:
        return None  # in the gap of a spring-forward change
    return moment
