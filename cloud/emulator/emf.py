"""CloudWatch embedded metric format (EMF) in the emulator (the bridge's patch 13).

On AWS, a log event that is an EMF document (a JSON object whose `_aws` member carries a
`Timestamp` in epoch milliseconds and `CloudWatchMetrics` directives) makes CloudWatch create the
metrics it names; moto 5.2.5 only stores the line. `apply()` makes PutLogEvents extract them into
moto's CloudWatch as AWS documents it (Specification: Embedded metric format): for every
directive, every dimension set and every metric, one datapoint per value (a metric may hold an
array of up to 100 values), at the document's timestamp. A document that breaks the
specification creates no metric at all, as on AWS; the emulator's log says why.

So the agents' metrics (agent/metrics.py) can be read back with GetMetricStatistics and
GetMetricData, and alarms and dashboards can be tried on them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Final

_log = logging.getLogger(__name__)

MAX_METRICS: Final = 100
MAX_DIMENSIONS: Final = 30
MAX_VALUES: Final = 100


class InvalidEmf(ValueError):
    """The document claims to be EMF but breaks the specification."""


def metric_data(message: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(namespace, PutMetricData-style datums) for an EMF log message; [] for a message that
    is not EMF. Raises InvalidEmf for one that breaks the specification."""
    try:
        document = json.loads(message)
    except ValueError:
        return []
    if not isinstance(document, dict) or "_aws" not in document:
        return []
    meta = document["_aws"]
    if not isinstance(meta, dict) or not isinstance(meta.get("CloudWatchMetrics"), list):
        raise InvalidEmf("_aws.CloudWatchMetrics must be an array")
    timestamp = meta.get("Timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise InvalidEmf("_aws.Timestamp must be a number of epoch milliseconds")
    # moto keeps metric timestamps as naive UTC datetimes.
    moment = dt.datetime.fromtimestamp(timestamp / 1000, tz=dt.UTC).replace(tzinfo=None)
    return [_directive(document, d, moment) for d in meta["CloudWatchMetrics"]]


def _directive(
    document: dict[str, Any], directive: Any, moment: dt.datetime
) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(directive, dict) or not isinstance(directive.get("Namespace"), str):
        raise InvalidEmf("a directive needs a Namespace string")
    dimension_sets = directive.get("Dimensions")
    metrics = directive.get("Metrics")
    if not isinstance(dimension_sets, list) or not isinstance(metrics, list):
        raise InvalidEmf("a directive needs Dimensions and Metrics arrays")
    if len(metrics) > MAX_METRICS:
        raise InvalidEmf(f"more than {MAX_METRICS} metrics in a directive")
    data = []
    for dimension_set in dimension_sets:
        dimensions = _dimensions(document, dimension_set)
        for metric in metrics:
            name, unit, values = _metric(document, metric)
            datum: dict[str, Any] = {
                "MetricName": name,
                "Dimensions": dimensions,
                "Values": values,
                "Timestamp": moment,
            }
            if unit:
                datum["Unit"] = unit
            data.append(datum)
    return directive["Namespace"], data


def _dimensions(document: dict[str, Any], dimension_set: Any) -> list[dict[str, str]]:
    if not isinstance(dimension_set, list) or len(dimension_set) > MAX_DIMENSIONS:
        raise InvalidEmf(f"a dimension set is an array of at most {MAX_DIMENSIONS} names")
    dimensions = []
    for key in dimension_set:
        value = document.get(key) if isinstance(key, str) else None
        if not isinstance(value, str):
            raise InvalidEmf(f"dimension {key!r} is not a string member of the document")
        dimensions.append({"Name": key, "Value": value})
    return dimensions


def _metric(document: dict[str, Any], metric: Any) -> tuple[str, str | None, list[float]]:
    if not isinstance(metric, dict) or not isinstance(metric.get("Name"), str):
        raise InvalidEmf("a metric definition needs a Name string")
    name = metric["Name"]
    value = document.get(name)
    values: list[Any] = value if isinstance(value, list) else [value]
    if not values or len(values) > MAX_VALUES or not all(_number(v) for v in values):
        raise InvalidEmf(f"metric {name!r} is not a number or an array of 1-100 numbers")
    unit = metric.get("Unit")
    return name, unit if isinstance(unit, str) else None, [float(v) for v in values]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply() -> None:
    """Patch moto's Logs backend: PutLogEvents also extracts EMF metrics."""
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.logs.models import LogsBackend

    backend_cls: Any = LogsBackend
    original = backend_cls.put_log_events

    def put_log_events(
        self: Any, log_group_name: str, log_stream_name: str, log_events: list[dict[str, Any]]
    ) -> Any:
        result = original(self, log_group_name, log_stream_name, log_events)
        cloudwatch = cloudwatch_backends[self.account_id][self.region_name]
        for event in log_events:
            try:
                extracted = metric_data(str(event.get("message", "")))
            except InvalidEmf as exc:
                _log.warning("EMF document in %s ignored: %s", log_group_name, exc)
                continue
            for namespace, data in extracted:
                cloudwatch.put_metric_data(namespace, data)
        return result

    backend_cls.put_log_events = put_log_events
