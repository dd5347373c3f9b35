"""What workflow schedules need from `rsql-cloud deploy`: the EventBridge Scheduler group the
schedules live in, and the SQS dead-letter queue for the starts the scheduler gave up on (the
scheduler's role is a `Role` of cloud/resources.py). `workflow put` keeps the schedules
themselves (cloud/workflow_schedules.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from cloud.remote import RemoteState
from cloud.resources import Instruction, Resource

# A dead letter waits the longest SQS allows: someone has to look at it.
DLQ_RETENTION_S: Final = 14 * 24 * 3600
# SQS refuses a queue name for 60 s after a queue of that name was deleted.
_QUEUE_DELETED_RECENTLY: Final = frozenset({"AWS.SimpleQueueService.QueueDeletedRecently"})


class Queue(Resource):
    kind = "SQS queue"
    service = "sqs"

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.queue(self.name)

    @property
    def attributes(self) -> dict[str, str]:
        return {"MessageRetentionPeriod": str(DLQ_RETENTION_S), "SqsManagedSseEnabled": "true"}

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        described = self.describe(remote)
        if described is None:
            params = {
                "QueueName": self.name,
                "Attributes": self.attributes,
                "tags": self.stack.tag_map,
            }
            create = self.step(
                f"Creating {self.kind}", "create_queue", params, retry_codes=_QUEUE_DELETED_RECENTLY
            )
            return [create]
        drift = {k: v for k, v in self.attributes.items() if described.get(k) != v}
        if not drift:
            return []
        params = {"QueueUrl": described["QueueUrl"], "Attributes": drift}
        return [self.step(f"Updating {self.kind}", "set_queue_attributes", params)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        described = remote.queue(self.name) or {}
        params = {"QueueUrl": described.get("QueueUrl", self.name)}
        return [self.step(f"Deleting {self.kind}", "delete_queue", params)]


class ScheduleGroup(Resource):
    """Holds one schedule per scheduled workflow; deleting it deletes them."""

    kind = "EventBridge Scheduler group"
    service = "scheduler"
    status_key = "State"

    def describe(self, remote: RemoteState) -> dict[str, Any] | None:
        return remote.schedule_group(self.name)

    def plan(self, remote: RemoteState, earlier: Sequence[Instruction]) -> list[Instruction]:
        described = self.describe(remote)
        if described is not None and not self.going(described):
            return []
        params = {"Name": self.name, "Tags": self.stack.tags()}
        # A group AWS is still deleting keeps its name a little while.
        conflict = frozenset({"ConflictException"})
        what = f"Creating {self.kind}"
        return [self.step(what, "create_schedule_group", params, retry_codes=conflict)]

    def deletion(self, remote: RemoteState) -> list[Instruction]:
        params = {"Name": self.name}
        what = f"Deleting {self.kind} and its schedules"
        return [self.step(what, "delete_schedule_group", params)]
