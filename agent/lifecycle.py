"""Scale-in and Spot interruptions: drain before the instance goes, and tell Auto Scaling.

Every `lifecycle_poll_interval_s` (at most 10 s: a Spot notice comes two minutes ahead) the
watcher reads two instance metadata paths (IMDSv2):

    autoscaling/target-lifecycle-state   `Terminated` once the group has chosen this instance
                                         to go (scale-in, instance refresh, health check)
    spot/instance-action                 {"action": "terminate", "time": "...Z"}: a Spot
                                         interruption, absent (404) until there is one

On either the agent stops polling and drains (`Agent.request_stop`). On a scale-in, running jobs
get `lifecycle_drain_timeout_s` while the watcher keeps the group's termination lifecycle action
open with RecordLifecycleActionHeartbeat every `lifecycle_heartbeat_interval_s`; on a Spot notice
they get until the notice's time less `spot_margin_s`, and what still runs then is failed back
with Agent.ShuttingDown so another host retries it. After the drain, `finish()` sends
CompleteLifecycleAction CONTINUE once, so the group terminates the instance at once instead of
at the hook's timeout.

The group and hook come from the settings, else from the instance's tags (schema.py names
them), read from instance metadata when the instance exposes its tags there, else with
ec2:DescribeTags. An answer that makes no sense is one warning line, repeated only when the
problem changes, and is otherwise ignored: the watcher never stops the agent by mistake.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent import schema
from agent.aws import Aws, error_code
from agent.imds import Imds, ImdsError, metadata_disabled, shown
from agent.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

LIFECYCLE_STATE_PATH: Final = "autoscaling/target-lifecycle-state"
SPOT_ACTION_PATH: Final = "spot/instance-action"
TAGS_PATH: Final = "tags/instance"
TERMINATED: Final = "Terminated"
# Documented values of target-lifecycle-state; only Terminated makes the agent drain.
LIFECYCLE_STATES: Final = frozenset(
    {
        "InService",
        "Standby",
        "Detached",
        "Terminated",
        "Warmed:Hibernated",
        "Warmed:Running",
        "Warmed:Stopped",
        "Warmed:Terminated",
    }
)
SPOT_ACTIONS: Final = frozenset({"terminate", "stop", "hibernate"})
SCALE_IN: Final = "scale-in"
SPOT: Final = "spot"
_TAG_KEY_RE: Final = re.compile(r"^[\w.:/=+@ -]{1,128}$")

# request_stop(drain_timeout_s, reason)
StopRequest = Callable[[float, str], None]


class UnusableAnswer(Exception):
    """Instance metadata answered, but not with something this path can hold."""


@dataclass(frozen=True)
class SpotNotice:
    action: str
    at_epoch_s: float


def parse_lifecycle_state(text: str) -> str:
    """The target lifecycle state; UnusableAnswer for anything not documented."""
    state = text.strip()
    if state not in LIFECYCLE_STATES:
        raise UnusableAnswer(f"not a lifecycle state: {shown(text)}")
    return state


def parse_spot_action(text: str) -> SpotNotice:
    """`{"action": "terminate", "time": "2026-11-27T08:22:00Z"}`; UnusableAnswer otherwise."""
    try:
        data = json.loads(text)
        action, when = data["action"], data["time"]
        if action not in SPOT_ACTIONS or not isinstance(when, str):
            raise ValueError
        moment = dt.datetime.fromisoformat(when)
        if moment.tzinfo is None:
            raise ValueError
    except (ValueError, TypeError, KeyError):
        raise UnusableAnswer(f"not a Spot instance action: {shown(text)}") from None
    return SpotNotice(action, moment.timestamp())


def make_watcher(
    settings: Settings, aws: Aws, instance_id: str, stop: StopRequest
) -> LifecycleWatcher | None:
    """The watcher, or None (logged) when the settings or the environment turn it off."""
    if not settings.lifecycle_watch:
        log.info("lifecycle_watch_off", reason="RSQL_AGENT_LIFECYCLE_WATCH is false")
        return None
    if metadata_disabled(settings):
        log.info("lifecycle_watch_off", reason="AWS_EC2_METADATA_DISABLED is true")
        return None
    imds = Imds(settings.imds_endpoint_url, settings.imds_timeout_s)
    return LifecycleWatcher(settings, aws, imds, instance_id, stop)


class LifecycleWatcher:
    """Watches for a scale-in or a Spot notice, then keeps the lifecycle action open until
    `finish()` completes it. `run()` runs until cancelled."""

    def __init__(
        self, settings: Settings, aws: Aws, imds: Imds, instance_id: str, stop: StopRequest
    ) -> None:
        self._settings = settings
        self._aws = aws
        self._imds = imds
        self._instance_id = instance_id
        self._stop = stop
        self._group: str | None = settings.autoscaling_group_name
        self._hook: str | None = settings.lifecycle_hook_name
        self._tags_read = False
        self._problems: dict[str, str] = {}
        self._beating = True
        self.scale_in = False
        self.spot: SpotNotice | None = None
        self.heartbeats = 0

    async def run(self) -> None:
        """Poll until cancelled (after the drain); heartbeat the action once scaled in."""
        await self._read_tags()
        log.info("lifecycle_watch_started", group=self._group, hook=self._hook)
        next_beat = 0.0
        while True:
            await self._check()
            if self.scale_in and self._beating and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self._settings.lifecycle_heartbeat_interval_s
                await self._heartbeat()
            await asyncio.sleep(self._settings.lifecycle_poll_interval_s)

    async def finish(self) -> None:
        """After the drain: CompleteLifecycleAction CONTINUE, once, if scaled in."""
        if not self.scale_in or not self._action_known():
            return
        try:
            await self._call_action(
                self._aws.autoscaling.complete_lifecycle_action, LifecycleActionResult="CONTINUE"
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("lifecycle_action_not_completed", error=error_code(exc), detail=str(exc))
            return
        log.info("lifecycle_action_completed", group=self._group, hook=self._hook)

    async def _check(self) -> None:
        if not self.scale_in:
            state = await self._read(LIFECYCLE_STATE_PATH, parse_lifecycle_state)
            if state == TERMINATED:
                await self._scaled_in()
        if self.spot is None:
            notice = await self._read(SPOT_ACTION_PATH, parse_spot_action)
            if notice is not None:
                self._spot_notice(notice)

    async def _read(self, path: str, parse: Callable[[str], T]) -> T | None:
        """The parsed answer at `path`, None when absent or unusable (warned about once)."""
        try:
            text = await asyncio.to_thread(self._imds.get, path)
            value = parse(text) if text is not None else None
        except (ImdsError, UnusableAnswer) as exc:
            problem = str(exc) if isinstance(exc, ImdsError) else self._imds.where(path) + str(exc)
            if self._problems.get(path) != problem:
                self._problems[path] = problem
                log.warning("instance_metadata_unusable", path=path, problem=problem)
            return None
        if self._problems.pop(path, None) is not None:
            log.info("instance_metadata_usable_again", path=path)
        return value

    async def _scaled_in(self) -> None:
        self.scale_in = True
        if not self._action_known():
            await self._read_tags()
        log.warning(
            "scale_in_notice",
            group=self._group,
            hook=self._hook,
            drain_timeout_s=self._settings.lifecycle_drain_timeout_s,
        )
        if not self._action_known():
            log.warning(
                "lifecycle_hook_unknown",
                detail="set RSQL_AGENT_AUTOSCALING_GROUP_NAME and RSQL_AGENT_LIFECYCLE_HOOK_NAME "
                f"or tag the group {schema.LIFECYCLE_HOOK_TAG}: without a hook Auto Scaling "
                "does not wait for the drain",
            )
        self._stop(self._settings.lifecycle_drain_timeout_s, SCALE_IN)

    def _spot_notice(self, notice: SpotNotice) -> None:
        self.spot = notice
        left_s = notice.at_epoch_s - time.time() - self._settings.spot_margin_s
        timeout_s = min(max(0.0, left_s), self._settings.lifecycle_drain_timeout_s)
        log.warning(
            "spot_interruption_notice",
            action=notice.action,
            at=schema.iso_utc_ms(notice.at_epoch_s),
            drain_timeout_s=round(timeout_s, 1),
        )
        self._stop(timeout_s, SPOT)

    async def _heartbeat(self) -> None:
        if not self._action_known():
            return
        try:
            await self._call_action(
                self._aws.autoscaling.record_lifecycle_action_heartbeat,
                deadline_s=self._settings.lifecycle_heartbeat_interval_s,
            )
        except ClientError as exc:
            log.warning("lifecycle_heartbeat_failed", error=error_code(exc), detail=str(exc))
            # No open action for this instance (no such hook, or it already ended): more
            # heartbeats would only repeat the refusal.
            self._beating = error_code(exc) != "ValidationError"
            return
        except BotoCoreError as exc:
            log.warning("lifecycle_heartbeat_failed", error=error_code(exc))
            return
        self.heartbeats += 1

    def _action_known(self) -> bool:
        return bool(self._group and self._hook)

    async def _call_action(self, method: Callable[..., object], **kwargs: Any) -> None:
        """One lifecycle action call for this instance's action in its group's hook."""
        assert self._group and self._hook
        await self._aws.call(
            method,
            AutoScalingGroupName=self._group,
            LifecycleHookName=self._hook,
            InstanceId=self._instance_id,
            **kwargs,
        )

    async def _read_tags(self) -> None:
        """Group and hook names the settings left open, from the instance's tags."""
        if self._action_known() or self._tags_read:
            return
        wanted = (schema.AUTOSCALING_GROUP_TAG, schema.LIFECYCLE_HOOK_TAG)
        tags = await self._tags_from_metadata(wanted)
        if tags is None:
            tags = await self._tags_from_ec2(wanted)
        if tags is None:
            return
        self._tags_read = True
        self._group = self._group or tags.get(schema.AUTOSCALING_GROUP_TAG)
        self._hook = self._hook or tags.get(schema.LIFECYCLE_HOOK_TAG)

    async def _tags_from_metadata(self, wanted: tuple[str, ...]) -> dict[str, str] | None:
        """None when the instance does not expose its tags in metadata (404) or on failure."""
        keys = await self._read(TAGS_PATH, str.splitlines)
        if keys is None:
            return None
        tags = {}
        for key in wanted:
            if key in keys and _TAG_KEY_RE.match(key):
                value = await self._read(f"{TAGS_PATH}/{key}", str.strip)
                if value:
                    tags[key] = value
        return tags

    async def _tags_from_ec2(self, wanted: tuple[str, ...]) -> dict[str, str] | None:
        if not self._instance_id.startswith("i-"):
            return None  # off EC2: no tags to read
        try:
            response = await self._aws.call(
                self._aws.ec2.describe_tags,
                # Bounded: the first look at instance metadata waits for this.
                deadline_s=self._settings.lifecycle_poll_interval_s,
                Filters=[
                    {"Name": "resource-id", "Values": [self._instance_id]},
                    {"Name": "key", "Values": list(wanted)},
                ],
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("instance_tags_unavailable", error=error_code(exc))
            return None
        return {
            t["Key"]: t["Value"] for t in response.get("Tags", []) if "Key" in t and "Value" in t
        }
