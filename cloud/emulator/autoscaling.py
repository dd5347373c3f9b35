"""Auto Scaling termination lifecycle hooks in the emulator (the bridge's patch 7).

moto 5.2.5 stores lifecycle hooks but never runs them: TerminateInstanceInAutoScalingGroup
terminates the instance at once, CompleteLifecycleAction answers HTTP 500 and
RecordLifecycleActionHeartbeat "has not been implemented". AWS, for a group with an
`autoscaling:EC2_INSTANCE_TERMINATING` hook, puts the instance in `Terminating:Wait` (its
metadata's `autoscaling/target-lifecycle-state` turns `Terminated`), accepts heartbeats and one
completion for that action, answers `ValidationError: No active Lifecycle Action found with
instance ID ...` for an instance with no open action, and terminates the instance once the
action completes (CONTINUE or ABANDON alike, for a termination hook). `apply()` makes moto do
that, with the group's desired capacity decremented as the caller asked.

Not emulated (see the README): the hook's heartbeat and global timeouts (an action stays open
until completed), scale-in by a lower desired capacity or a scaling policy (only
TerminateInstanceInAutoScalingGroup enters Terminating:Wait), launch hooks, and notifications.

Every heartbeat and completion, accepted or refused, is recorded; `GET
/moto-api/rsql/lifecycle-actions` on the emulator answers `{"calls": [...], "open": [...]}` so a
test can assert that an action was completed exactly once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Final

TERMINATING_TRANSITION: Final = "autoscaling:EC2_INSTANCE_TERMINATING"
TERMINATING_WAIT: Final = "Terminating:Wait"
CALLS_PATH: Final = "/moto-api/rsql/lifecycle-actions"


@dataclass
class OpenAction:
    group: str
    hook: str
    instance_id: str
    token: str
    should_decrement: bool


@dataclass
class Call:
    action: str  # RecordLifecycleActionHeartbeat | CompleteLifecycleAction
    group: str
    hook: str
    instance_id: str
    result: str | None
    accepted: bool
    at: float


class LifecycleActions:
    """The open lifecycle actions and the record of calls; one lock guards both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, OpenAction] = {}
        self._calls: list[Call] = []

    def open(self, action: OpenAction) -> None:
        with self._lock:
            self._open[action.instance_id] = action

    def take(
        self, name: str, group: str, hook: str, instance_id: str, token: str, result: str | None
    ) -> OpenAction | None:
        """Record a call; the matching open action (closed if this completes it), or None."""
        with self._lock:
            action = self._open.get(instance_id) if instance_id else None
            if action is None and token:
                action = next((a for a in self._open.values() if a.token == token), None)
            if action is not None and (action.group, action.hook) != (group, hook):
                action = None
            if action is not None and name == "CompleteLifecycleAction":
                del self._open[action.instance_id]
            target = action.instance_id if action else instance_id
            self._calls.append(
                Call(name, group, hook, target, result, action is not None, time.time())
            )
            return action

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": [asdict(call) for call in self._calls],
                "open": [asdict(action) for action in self._open.values()],
            }


def apply() -> LifecycleActions:
    """Patch moto's Auto Scaling backend and responses; return the shared record."""
    actions = LifecycleActions()
    _patch_terminate(actions)
    _patch_responses(actions)
    _add_calls_route(actions)
    return actions


def _patch_terminate(actions: LifecycleActions) -> None:
    from moto.autoscaling.models import AutoScalingBackend, TerminateInstanceActivity

    backend_cls: Any = AutoScalingBackend
    original = backend_cls.terminate_instance

    def terminate_instance(self: Any, instance_id: str, should_decrement: bool) -> Any:
        state = next(
            (
                s
                for group in self.autoscaling_groups.values()
                for s in group.instance_states
                if s.instance.id == instance_id
            ),
            None,
        )
        if state is None:
            return original(self, instance_id, should_decrement)
        group = state.instance.autoscaling_group
        hook = next(
            (
                h
                for h in self.lifecycle_hooks.values()
                if h.auto_scaling_group_name == group.name
                and h.lifecycle_transition == TERMINATING_TRANSITION
            ),
            None,
        )
        if hook is None:
            return original(self, instance_id, should_decrement)
        state.lifecycle_state = TERMINATING_WAIT
        actions.open(
            OpenAction(group.name, hook.name, instance_id, str(uuid.uuid4()), should_decrement)
        )
        return TerminateInstanceActivity(state.instance, group.desired_capacity)

    backend_cls.terminate_instance = terminate_instance
    backend_cls.rsql_finish_termination = original


def _patch_responses(actions: LifecycleActions) -> None:
    from moto.autoscaling.exceptions import ValidationError
    from moto.autoscaling.responses import AutoScalingResponse
    from moto.core.responses import EmptyResult

    def handle(self: Any, name: str) -> Any:
        group = self._get_param("AutoScalingGroupName") or ""
        hook = self._get_param("LifecycleHookName") or ""
        instance_id = self._get_param("InstanceId") or ""
        token = self._get_param("LifecycleActionToken") or ""
        result = self._get_param("LifecycleActionResult")
        if name == "CompleteLifecycleAction" and result not in ("CONTINUE", "ABANDON"):
            raise ValidationError("LifecycleActionResult must be CONTINUE or ABANDON")
        action = actions.take(name, group, hook, instance_id, token, result)
        if action is None:
            raise ValidationError(
                f"No active Lifecycle Action found with instance ID {instance_id or token}"
            )
        if name == "CompleteLifecycleAction":
            # A termination hook terminates the instance whatever the result.
            backend: Any = self.autoscaling_backend
            backend.rsql_finish_termination(action.instance_id, action.should_decrement)
        return EmptyResult()

    def complete_lifecycle_action(self: Any) -> Any:
        return handle(self, "CompleteLifecycleAction")

    def record_lifecycle_action_heartbeat(self: Any) -> Any:
        return handle(self, "RecordLifecycleActionHeartbeat")

    response_cls: Any = AutoScalingResponse
    response_cls.complete_lifecycle_action = complete_lifecycle_action
    response_cls.record_lifecycle_action_heartbeat = record_lifecycle_action_heartbeat


def _add_calls_route(actions: LifecycleActions) -> None:
    from moto.moto_api._internal import urls

    def lifecycle_calls(request: Any, full_url: str, headers: Any) -> Any:
        return 200, {"Content-Type": "application/json"}, json.dumps(actions.snapshot())

    urls.url_paths["{0}" + CALLS_PATH] = lifecycle_calls
