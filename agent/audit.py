"""The job audit table (PK job_name, SK workflow_execution_id): one row per job of a run.

A job costs two writes: one UpdateItem when it starts (status Running, its attempt number, a
log stream of its own from the second attempt on), one when it ends (final status and
figures). Every write is safe to repeat and safe to arrive late:

- The start write SETs the attempt the state machine numbered (`attempt` in the task input) on
  condition that no newer attempt holds the row; a repeat after a lost answer writes the same
  values again, and a late writer is refused (`errors.StaleAttempt`: its task is over).
  Without an attempt in the input (an older state machine) it ADDs 1, on condition that the row
  does not already carry this attempt's id, so a repeat never counts one attempt twice.
- The end write is conditional on the attempt, so a stale host never overwrites a newer
  attempt's row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import structlog
from botocore.exceptions import ClientError

from agent import errors, schema
from agent.aws import FOREVER, Aws, error_code
from agent.items import from_item, to_attribute, to_item
from agent.journal import AuditEnd
from agent.schema import JobAudit as A

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

log = structlog.get_logger(__name__)

CONDITION_FAILED: Final = "ConditionalCheckFailedException"
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

    async def start(self, key: JobKey, attempt: int | None, attempt_id: str) -> tuple[int, str]:
        """Mark the job Running as `attempt` (None: the next one); returns (attempt, log
        stream). Raises errors.StaleAttempt when a newer attempt holds the row."""
        update = self._identity(_Update(), key, time.time()).set(A.EXECUTION_STATUS, schema.RUNNING)
        update.set(A.LOG_STREAM, self._stream(key, attempt or 1)).remove(*_FINAL_FIELDS)
        claimed = await self._claim(key, update, attempt, attempt_id)
        stream = self._stream(key, claimed)
        if attempt is None and claimed > 1:
            # Rare (a retry): the stream name written with the claim was the first attempt's.
            await self._update(key, _Update().set(A.LOG_STREAM, stream))
        return claimed, stream

    async def finish(
        self, key: RowKey, attempt: int, log_stream: str | None, end: AuditEnd
    ) -> None:
        """Write the final status; skipped (with a warning) if a newer attempt owns the row.
        Retried until the table answers."""
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
            if error_code(exc) != CONDITION_FAILED:
                raise
            log.warning("audit_row_taken_by_newer_attempt", attempt=attempt)

    async def record_at_once(
        self,
        key: JobKey,
        end: AuditEnd,
        log_stream: str | None,
        attempt: int | None,
        attempt_id: str,
    ) -> None:
        """One write for a job that ends before it starts (no script, or Skipped)."""
        now = time.time()
        update = self._identity(_Update(), key, now).set(A.EXECUTION_STATUS, end.status)
        update.set(A.EXECUTION_END_TS, schema.iso_utc_ms(now)).set(A.DURATION_MS, end.duration_ms)
        update.set(A.EXIT_CODE, end.exit_code).set(A.ERROR, end.error).set(A.CAUSE, end.cause)
        update.set(A.LOG_STREAM, log_stream)
        missing = [f for f in (*_FINAL_FIELDS, A.LOG_STREAM) if f not in update.names.values()]
        update.remove(*missing)
        try:
            await self._claim(key, update, attempt, attempt_id)
        except errors.StaleAttempt:
            log.warning("audit_row_taken_by_newer_attempt", attempt=attempt)

    async def _claim(
        self, key: JobKey, update: _Update, attempt: int | None, attempt_id: str
    ) -> int:
        """Write `update` as attempt `attempt` (or the next) of this row; returns the attempt."""
        update.set(A.ATTEMPT_ID, attempt_id)
        if attempt is not None:
            update.set(A.ATTEMPT, attempt)
            condition = f"attribute_not_exists(#{A.ATTEMPT}) OR #{A.ATTEMPT} <= :{A.ATTEMPT}"
            try:
                await self._update(key, update, ConditionExpression=condition)
            except ClientError as exc:
                if error_code(exc) != CONDITION_FAILED:
                    raise
                raise errors.StaleAttempt(f"a newer attempt than {attempt} holds the row") from None
            return attempt
        update.add(A.ATTEMPT, 1)
        condition = f"attribute_not_exists(#{A.ATTEMPT_ID}) OR #{A.ATTEMPT_ID} <> :{A.ATTEMPT_ID}"
        try:
            item = await self._update(
                key, update, ConditionExpression=condition, ReturnValues="UPDATED_NEW"
            )
            return int(from_item(item.get("Attributes", {})).get(A.ATTEMPT, 1))
        except ClientError as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
        # This attempt's write went through before (its answer was lost): read what it counted.
        row = await self.previous_run(key.job_name, key.workflow_execution_id)
        return int(row.get(A.ATTEMPT, 1))

    async def previous_run(self, job_name: str, workflow_execution_id: str) -> dict[str, Any]:
        """The row of this job in an earlier run ({} if none), for restarts."""
        response = await self._aws.call(
            self._aws.dynamodb.get_item,
            deadline_s=FOREVER,
            TableName=self._table,
            Key=to_item({A.JOB_NAME: job_name, A.WORKFLOW_EXECUTION_ID: workflow_execution_id}),
            ConsistentRead=True,
        )
        return from_item(response.get("Item", {}))

    @staticmethod
    def _stream(key: JobKey, attempt: int) -> str:
        return schema.log_stream_name(
            key.workflow_id, key.workflow_execution_id, key.job_name, attempt
        )

    def _identity(self, update: _Update, key: JobKey, now: float) -> _Update:
        update.set(A.EXECUTION_START_TS, schema.iso_utc_ms(now))
        update.set(A.WORKFLOW_ID, key.workflow_id).set(A.STAGE_INDEX, key.stage_index)
        update.set(A.INSTANCE_ID, self._instance_id).set(A.WORKER_NAME, self._worker_name)
        return update

    async def _update(self, key: RowKey, update: _Update, **extra: Any) -> dict[str, Any]:
        # Retried until the table answers: an outage delays an audit write, never loses it.
        response = await self._aws.call(
            self._aws.dynamodb.update_item,
            deadline_s=FOREVER,
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
