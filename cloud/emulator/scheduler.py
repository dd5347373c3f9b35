"""The emulator's EventBridge Scheduler: moto stores schedules but never runs them; this loop
does, in the emulator process, through the emulator's own API (so every bridge patch applies).

Every `tick_s` it lists the enabled schedules and works out which runs fell due since it last
looked (cloud/schedule_expressions.py: at, rate and cron in the schedule's time zone, StartDate
and EndDate honoured), then invokes each schedule's target once per due run, as Scheduler does:

- the universal target `arn:aws:scheduler:::aws-sdk:<service>:<action>` makes that API call
  with the target's Input as its parameters (PascalCase, as Scheduler takes them), after
  filling in the context attributes `<aws.scheduler.execution-id>` (one UUID per invocation,
  the same on its retries), `<aws.scheduler.scheduled-time>`, `<aws.scheduler.schedule-arn>`
  and `<aws.scheduler.attempt-number>`;
- a templated Step Functions target (the state machine's ARN) starts an execution with the
  Input as the execution input;
- a failed call is retried (throttling and server errors) up to the RetryPolicy's attempts
  within its MaximumEventAgeInSeconds, then, like any other failure, sent to the
  DeadLetterConfig queue: the body is the target input, the message attributes ERROR_CODE,
  ERROR_MESSAGE, EXECUTION_ID, SCHEDULE_ARN, TARGET_ARN and RETRY_ATTEMPTS say what failed;
- a finished one-time schedule whose ActionAfterCompletion is DELETE is deleted.

Runs that fell due before a schedule was created or last changed, or before the runner
started, are not made up. Not
emulated: IAM (the role is not assumed), FlexibleTimeWindow (runs are on time), KMS.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import boto3
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cloud import schedule_expressions

_log = logging.getLogger(__name__)

UNIVERSAL_TARGET_RE: Final = re.compile(r"^arn:[a-z-]+:scheduler:::aws-sdk:([a-z0-9-]+):(\w+)$")
_STATE_MACHINE_RE: Final = re.compile(r"^arn:[a-z-]+:states:[^:]+:\d+:stateMachine:.+$")
# Scheduler's service names where boto3's differ.
_SERVICES: Final = {"sfn": "stepfunctions"}
_RETRYABLE: Final = frozenset(
    {"ThrottlingException", "Throttling", "ServiceUnavailable", "InternalServerError"}
)
_RETRY_DELAY_S: Final = 1.0


@dataclass
class _Invocation:
    schedule: dict[str, Any]
    scheduled_at: dt.datetime
    execution_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempt: int = 1
    next_attempt_at: float = 0.0  # monotonic


class ScheduleRunner:
    """The loop; `tick(now)` is one pass, callable directly with any clock (tests)."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        tick_s: float = 1.0,
        group: str | None = None,
        started_at: dt.datetime | None = None,
    ) -> None:
        self._tick_s = tick_s
        # Runs due before the runner started are not made up.
        self._started_at = started_at or dt.datetime.now(dt.UTC)
        self._group = group  # only this group (tests), else every group
        self._clients: dict[str, Any] = {}
        self._endpoint_url = endpoint_url
        self._region = region
        # Per schedule ARN: its LastModificationDate and the time up to which runs were handled.
        self._seen: dict[str, tuple[Any, dt.datetime]] = {}
        self._retries: list[_Invocation] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                self.tick(dt.datetime.now(dt.UTC))
            except (BotoCoreError, ClientError) as exc:  # the server stopping, or a bug of ours
                _log.warning("scheduler pass failed: %s", exc)

    def tick(self, now: dt.datetime) -> list[str]:
        """Invoke every run due up to `now`; returns the invocations' execution ids."""
        invoked = []
        for summary in self._schedules():
            # moto's summaries carry the expression (AWS's do not): fetch the whole schedule
            # only when a run is due, or when the summary cannot tell.
            known = summary if "ScheduleExpression" in summary else self._get(summary)
            due = self._due(known, now) if known is not None else []
            schedule = self._get(summary) if due else None
            if schedule is None:
                continue  # nothing due, or deleted meanwhile
            for moment in due:
                invocation = _Invocation(schedule, moment)
                self._invoke(invocation)
                invoked.append(invocation.execution_id)
        retries, self._retries = self._retries, []
        for invocation in retries:
            if invocation.next_attempt_at <= time.monotonic():
                self._invoke(invocation)
            else:
                self._retries.append(invocation)
        return invoked

    # -- which runs are due ---------------------------------------------------------------------

    def _schedules(self) -> list[dict[str, Any]]:
        scheduler = self._client("scheduler")
        params: dict[str, Any] = {"State": "ENABLED"}
        if self._group:
            params["GroupName"] = self._group
        pages = scheduler.get_paginator("list_schedules").paginate(**params)
        return [dict(s) for page in pages for s in page.get("Schedules", [])]

    def _due(self, schedule: dict[str, Any], now: dt.datetime) -> list[dt.datetime]:
        arn = str(schedule["Arn"])
        modified = schedule.get("LastModificationDate") or schedule.get("CreationDate")
        seen = self._seen.get(arn)
        if seen is not None and seen[0] == modified:
            since = seen[1]
        else:  # new or changed: from its change on
            since = max(_utc(modified, now), self._started_at)
        self._seen[arn] = (modified, max(now, since))
        if now <= since:
            return []
        try:
            expression = schedule_expressions.parse(str(schedule.get("ScheduleExpression")))
        except schedule_expressions.ExpressionError:
            return []
        start = schedule.get("StartDate") or schedule.get("CreationDate")
        end = schedule.get("EndDate")
        runs = schedule_expressions.runs_between(
            expression,
            str(schedule.get("ScheduleExpressionTimezone") or "UTC"),
            since,
            now,
            start=_utc(start, since) if start else None,
        )
        if expression.kind == "at":
            return list(runs)  # Scheduler ignores StartDate and EndDate for one-time schedules
        return [
            run
            for run in runs
            if (not start or run >= _utc(start, run)) and (not end or run <= _utc(end, run))
        ]

    def _get(self, summary: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return dict(
                self._client("scheduler").get_schedule(
                    Name=summary["Name"], GroupName=summary.get("GroupName") or "default"
                )
            )
        except ClientError:
            return None  # deleted meanwhile

    # -- invoking -------------------------------------------------------------------------------

    def _invoke(self, invocation: _Invocation) -> None:
        schedule = invocation.schedule
        target = schedule.get("Target") or {}
        text = _fill(str(target.get("Input") or ""), invocation)
        try:
            self._call(str(target.get("Arn")), text)
        except (ClientError, ValueError) as exc:
            self._failed(invocation, exc, text)
            return
        _log.info(
            "schedule %s invoked %s (execution id %s)",
            schedule.get("Name"),
            target.get("Arn"),
            invocation.execution_id,
        )
        if (
            str(schedule.get("ScheduleExpression", "")).startswith("at(")
            and schedule.get("ActionAfterCompletion") == "DELETE"
        ):
            self._client("scheduler").delete_schedule(
                Name=schedule["Name"], GroupName=schedule.get("GroupName") or "default"
            )

    def _call(self, target_arn: str, text: str) -> None:
        if match := UNIVERSAL_TARGET_RE.match(target_arn):
            service, action = match.groups()
            params = json.loads(text) if text else {}
            if not isinstance(params, dict):
                raise ValueError("the Input of a universal target must be a JSON object")
            client = self._client(_SERVICES.get(service, service))
            name = action[0].upper() + action[1:]
            operation = client.meta.service_model.operation_model(name)
            # Scheduler takes the parameters in PascalCase; the wire names may be camelCase.
            members = {str(m).lower(): str(m) for m in operation.input_shape.members}
            kwargs = {members.get(str(k).lower(), str(k)): v for k, v in params.items()}
            getattr(client, xform_name(name))(**kwargs)
        elif _STATE_MACHINE_RE.match(target_arn):
            self._client("stepfunctions").start_execution(stateMachineArn=target_arn, input=text)
        else:
            raise ValueError(f"the emulator does not invoke targets like {target_arn}")

    def _failed(self, invocation: _Invocation, exc: Exception, text: str) -> None:
        target = invocation.schedule.get("Target") or {}
        policy = target.get("RetryPolicy") or {}
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else "ValidationError"
        age_s = (dt.datetime.now(dt.UTC) - invocation.scheduled_at).total_seconds()
        if (
            code in _RETRYABLE
            and invocation.attempt <= int(policy.get("MaximumRetryAttempts", 185))
            and age_s < float(policy.get("MaximumEventAgeInSeconds", 86400))
        ):
            invocation.attempt += 1
            invocation.next_attempt_at = time.monotonic() + _RETRY_DELAY_S * invocation.attempt
            self._retries.append(invocation)
            return
        _log.warning("schedule %s failed: %s", invocation.schedule.get("Name"), exc)
        dead_letters = (target.get("DeadLetterConfig") or {}).get("Arn")
        if dead_letters:
            self._dead_letter(str(dead_letters), invocation, code, str(exc), text)

    def _dead_letter(
        self, queue_arn: str, invocation: _Invocation, code: str, message: str, body: str
    ) -> None:
        sqs = self._client("sqs")
        account, name = queue_arn.split(":")[4:6]
        url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        attributes = {
            "ERROR_CODE": code,
            "ERROR_MESSAGE": message[:1000],
            "EXECUTION_ID": invocation.execution_id,
            "SCHEDULE_ARN": str(invocation.schedule.get("Arn")),
            "TARGET_ARN": str((invocation.schedule.get("Target") or {}).get("Arn")),
            "RETRY_ATTEMPTS": str(invocation.attempt - 1),
        }
        sqs.send_message(
            QueueUrl=url,
            MessageBody=body or "{}",
            MessageAttributes={
                key: {"DataType": "String", "StringValue": value}
                for key, value in attributes.items()
            },
        )

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service,  # type: ignore[call-overload]
                endpoint_url=self._endpoint_url,
                region_name=self._region,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 - the emulator's fake credentials
                config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
            )
        return self._clients[service]


def _fill(text: str, invocation: _Invocation) -> str:
    """Scheduler's context attributes in the target input."""
    values = {
        "<aws.scheduler.execution-id>": invocation.execution_id,
        "<aws.scheduler.scheduled-time>": invocation.scheduled_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "<aws.scheduler.schedule-arn>": str(invocation.schedule.get("Arn")),
        "<aws.scheduler.attempt-number>": str(invocation.attempt),
    }
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def _utc(value: Any, default: dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return default
