"""CloudWatch alarms and dashboards, and an SNS e-mail subscription, as resource models (the
scaling alarms of `rsql-cloud fleet`, and what `rsql-cloud deploy --alarms` adds)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from cloud.remote import RemoteState
from cloud.resources import Instruction, Ref, Resource

if TYPE_CHECKING:
    from cloud.deploy import DesiredStack

# What DescribeAlarms fills in for a field PutMetricAlarm left out.
_ALARM_DEFAULTS: Final = {
    "ActionsEnabled": True,
    "OKActions": [],
    "AlarmActions": [],
    "InsufficientDataActions": [],
    "TreatMissingData": "missing",
}


class Alarm(Resource):
    """A CloudWatch alarm: PutMetricAlarm is an upsert, so a change is one call."""

    kind = "CloudWatch alarm"
    service = "cloudwatch"

    def __init__(self, stack: DesiredStack, name: str, spec: dict[str, Any]) -> None:
        super().__init__(stack, name)
        self.spec = spec  # PutMetricAlarm parameters besides AlarmName and Tags

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.alarm(self.name)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        described = self.describe(remote)
        if described is not None and not _alarm_differs(described, self.spec):
            return []
        verb = "Creating" if described is None else "Updating"
        params = {"AlarmName": self.name, **self.spec, "Tags": self.stack.tags()}
        return [self.step(f"{verb} {self.kind}", "put_metric_alarm", params)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        return [self.step(f"Deleting {self.kind}", "delete_alarms", {"AlarmNames": [self.name]})]


def _alarm_differs(described: dict[str, Any], spec: dict[str, Any]) -> bool:
    for key, wanted in spec.items():
        have = described.get(key, _ALARM_DEFAULTS.get(key))
        if key == "Threshold":
            if have is None or float(have) != float(wanted):
                return True
        elif key == "Metrics":
            if _metrics(have) != _metrics(wanted):
                return True
        elif _has_ref(wanted) or have != wanted:
            return True
    return False


def _metrics(queries: Any) -> list[dict[str, Any]]:
    """Metric queries as comparable dicts (AWS answers ReturnData and leaves out empty Labels)."""
    result = []
    for query in queries or []:
        normalized = {k: v for k, v in query.items() if v not in (None, "")}
        normalized.setdefault("ReturnData", True)
        result.append(normalized)
    return sorted(result, key=lambda q: str(q.get("Id")))


def _has_ref(value: Any) -> bool:
    if isinstance(value, Ref):
        return True
    if isinstance(value, list):
        return any(_has_ref(item) for item in value)
    return False


class Dashboard(Resource):
    kind = "CloudWatch dashboard"
    service = "cloudwatch"

    def __init__(self, stack: DesiredStack, name: str, body: dict[str, Any]) -> None:
        super().__init__(stack, name)
        self.body = body

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.dashboard(self.name)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        described = self.describe(remote)
        if described is not None:
            try:
                if json.loads(described.get("DashboardBody") or "null") == self.body:
                    return []
            except json.JSONDecodeError:
                pass
        verb = "Creating" if described is None else "Updating"
        params = {"DashboardName": self.name, "DashboardBody": json.dumps(self.body)}
        return [self.step(f"{verb} {self.kind}", "put_dashboard", params)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        params = {"DashboardNames": [self.name]}
        return [self.step(f"Deleting {self.kind}", "delete_dashboards", params)]


class EmailSubscription(Resource):
    """An e-mail address subscribed to a topic of the stack. SNS mails the address a link to
    confirm; until then the subscription is pending (and listed as such). Deleting the topic
    deletes it, so it has no deletion of its own."""

    kind = "SNS e-mail subscription"
    service = "sns"

    def __init__(self, stack: DesiredStack, address: str, topic_arn: str) -> None:
        super().__init__(stack, address)
        self.topic_arn = topic_arn

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        for subscription in remote.subscriptions(self.topic_arn):
            if (
                subscription.get("Protocol") == "email"
                and subscription.get("Endpoint") == self.name
            ):
                return subscription
        return None

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        if self.describe(remote) is not None:
            return []
        params = {"TopicArn": self.topic_arn, "Protocol": "email", "Endpoint": self.name}
        topic = self.topic_arn.rsplit(":", 1)[-1]
        return [self.step(f"Subscribing to {topic} (confirm by e-mail)", "subscribe", params)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        return []
