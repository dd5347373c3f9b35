"""The job audit table (PK job_name, SK workflow_execution_id): one row per job of a run.

A job costs two writes: one UpdateItem when it starts (status Running, and ADD 1 to `attempt`,
whose new value comes back: a job the state machine retried gets attempt 2 and its own log
stream), one when it ends (final status and figures). The end write is conditional on the
attempt, so a stale host can never overwrite the row of a newer attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import structlog
from botocore.exceptions import ClientError

from agent import schema
from agent.aws import Aws, error_code
from agent.items import from_item, to_attribute, to_item
from agent.schema import JobAudit as A

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

log = structlog.get_logger(__name__)

# Attributes a previous attempt may have left that the new one must not show.
_FINAL_FIELDS = (A.EXECUTION_END_TS, A.EXIT_CODE, A.DURATION_MS, A.ERROR, A.CAUSE)


@dataclass(frozen=True)
class RowKey:
    job_name: str
    workflow_execution_id: str


@dataclass(frozen=True)
class JobKey(RowKey):
    """A row's key plus what a row records about where the job belongs."""

    workflow_id: str
    stage_index: int


@dataclass(frozen=True)
class JobEnd:
    status: schema.Status
    duration_ms: int
    exit_code: int | None = None
    error: str | None = None
    cause: str | None = None


class _Update:
    """Builds one UpdateExpression with placeholder names, so reserved words are harmless."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, AttributeValueTypeDef] = {}
        self._set: list[str] = []
        self._remove: list[str] = []
        self._add: list[str] = []

    def set(self, name: str, value: str | int | None) -> _Update:
        if value is not None:
            self._set.append(f"{self._name(name)} = {self._value(name, value)}")
        return self

    def remove(self, *names: str) -> _Update:
        self._remove.extend(self._name(n) for n in names)
        return self

    def add(self, name: str, value: int) -> _Update:
        self._add.append(f"{self._name(name)} {self._value(name, value)}")
        return self

    def expression(self) -> str:
        parts = []
        for keyword, clauses in (("SET", self._set), ("REMOVE", self._remove), ("ADD", self._add)):
            if clauses:
                parts.append(f"{keyword} {', '.join(clauses)}")
        return " ".join(parts)

    def _name(self, name: str) -> str:
        self.names[f"#{name}"] = name
        return f"#{name}"

    def _value(self, name: str, value: str | int) -> str:
        self.values[f":{name}"] = to_attribute(value)
        return f":{name}"


class JobAuditTable:
    def __init__(self, aws: Aws, table: str, instance_id: str, worker_name: str) -> None:
        self._aws = aws
        self._table = table
        self._instance_id = instance_id
        self._worker_name = worker_name

    async def start(self, key: JobKey) -> tuple[int, str]:
        """Mark the job Running; returns (attempt, log stream)."""
        stream = schema.log_stream_name(key.workflow_id, key.workflow_execution_id, key.job_name, 1)
        update = self._identity(_Update(), key, time.time()).set(A.EXECUTION_STATUS, schema.RUNNING)
        update.set(A.LOG_STREAM, stream).remove(*_FINAL_FIELDS).add(A.ATTEMPT, 1)
        item = await self._update(key, update, ReturnValues="UPDATED_NEW")
        attempt = int(from_item(item.get("Attributes", {})).get(A.ATTEMPT, 1))
        if attempt > 1:
            # Rare (a retry): the stream name written above was the first attempt's.
            stream = schema.log_stream_name(
                key.workflow_id, key.workflow_execution_id, key.job_name, attempt
            )
            await self._update(key, _Update().set(A.LOG_STREAM, stream))
        return attempt, stream

    async def finish(self, key: RowKey, attempt: int, log_stream: str | None, end: JobEnd) -> None:
        """Write the final status; skipped (with a warning) if a newer attempt owns the row."""
        update = _Update().set(A.EXECUTION_STATUS, end.status)
        update.set(A.EXECUTION_END_TS, schema.iso_utc_ms(time.time()))
        update.set(A.DURATION_MS, end.duration_ms).set(A.EXIT_CODE, end.exit_code)
        update.set(A.ERROR, end.error).set(A.CAUSE, end.cause).set(A.LOG_STREAM, log_stream)
        update.set(A.INSTANCE_ID, self._instance_id).set(A.WORKER_NAME, self._worker_name)
        update.names[f"#{A.ATTEMPT}"] = A.ATTEMPT
        update.values[":expected_attempt"] = to_attribute(attempt)
        try:
            await self._update(key, update, ConditionExpression=f"#{A.ATTEMPT} = :expected_attempt")
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            log.warning("audit_row_taken_by_newer_attempt", attempt=attempt)

    async def record_at_once(self, key: JobKey, end: JobEnd, log_stream: str | None) -> None:
        """One write for a job that ends before it starts (no script, or Skipped)."""
        now = time.time()
        update = self._identity(_Update(), key, now).set(A.EXECUTION_STATUS, end.status)
        update.set(A.EXECUTION_END_TS, schema.iso_utc_ms(now)).set(A.DURATION_MS, end.duration_ms)
        update.set(A.EXIT_CODE, end.exit_code).set(A.ERROR, end.error).set(A.CAUSE, end.cause)
        update.set(A.LOG_STREAM, log_stream).add(A.ATTEMPT, 1)
        missing = [f for f in (*_FINAL_FIELDS, A.LOG_STREAM) if f not in update.names.values()]
        await self._update(key, update.remove(*missing))

    async def previous_run(self, job_name: str, workflow_execution_id: str) -> dict[str, Any]:
        """The row of this job in an earlier run ({} if none), for restarts."""
        response = await self._aws.call(
            self._aws.dynamodb.get_item,
            TableName=self._table,
            Key=to_item({A.JOB_NAME: job_name, A.WORKFLOW_EXECUTION_ID: workflow_execution_id}),
            ConsistentRead=True,
        )
        return from_item(response.get("Item", {}))

    def _identity(self, update: _Update, key: JobKey, now: float) -> _Update:
        update.set(A.EXECUTION_START_TS, schema.iso_utc_ms(now))
        update.set(A.WORKFLOW_ID, key.workflow_id).set(A.STAGE_INDEX, key.stage_index)
        update.set(A.INSTANCE_ID, self._instance_id).set(A.WORKER_NAME, self._worker_name)
        return update

    async def _update(self, key: RowKey, update: _Update, **extra: Any) -> dict[str, Any]:
        # The ADD of `attempt` is not idempotent: a retry after an answer lost on the way can
        # count one attempt twice. Harmless: the log stream follows the attempt returned.
        response = await self._aws.call(
            self._aws.dynamodb.update_item,
            TableName=self._table,
            Key=to_item(
                {A.JOB_NAME: key.job_name, A.WORKFLOW_EXECUTION_ID: key.workflow_execution_id}
            ),
            UpdateExpression=update.expression(),
            ExpressionAttributeNames=update.names,
            ExpressionAttributeValues=update.values,
            **extra,
        )
        return cast(dict[str, Any], response)
