"""The bridge's patches that give moto's interpreter AWS's limits for what rsql-agent uses, one
function per limit; the letters are those of the list in `cloud/emulator/bridge.py`. moto
enforces none of these (or only part), so a workflow that would fail on AWS passed here.

The numbers and their sources are in `cloud/quotas.py`; "Handling errors in Step Functions
workflows" says States.ALL does not catch the terminal States.DataLimitExceeded.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any, Final

from moto.core.exceptions import AWSError
from moto.stepfunctions.parser.api import (
    ExecutionFailedEventDetails,
    HistoryEventType,
    TaskFailedEventDetails,
)
from moto.stepfunctions.parser.asl.component.common.error_name import error_equals_decl
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
    StatesErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
    inline_iteration_component,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import (
    DEFAULT_MAX_CONCURRENCY_VALUE,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
    state_task,
    state_task_activitiy,
    state_task_lambda,
)
from moto.stepfunctions.parser.asl.eval import environment
from moto.stepfunctions.parser.asl.eval.event import event_manager
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from cloud.emulator.hub import ActivityHub
from cloud.quotas import (
    DATA_LIMIT_ERROR,
    HISTORY_LIMIT_CAUSE,
    HISTORY_LIMIT_ERROR,
    INLINE_MAP_MAX_CONCURRENCY,
    MAX_HISTORY_EVENTS,
    MAX_PAYLOAD_BYTES,
)


class ValidationException(AWSError):
    TYPE = "ValidationException"
    STATUS = 400


_DATA_LIMIT: Final = StatesErrorName(typ=StatesErrorNameType.StatesStatesDataLimitExceeded)


def _event_details(**details: Any) -> Any:
    # moto's EventDetails is a TypedDict that mypy reads as total; moto fills one key at a time.
    return EventDetails(**details)  # type: ignore[typeddict-item]


def payload_bytes(value: Any) -> int:
    """The size AWS counts: the UTF-8 bytes of the value as JSON text (a string as it is)."""
    text = value if isinstance(value, str) else to_json_str(value, separators=(",", ":"))
    return len(text.encode("utf-8"))


def inline_map_runs_at_most_40_iterations() -> None:
    """(a) An inline Map runs at most 40 iterations at once, whatever its MaxConcurrency (0, or
    above 40, included): AWS does so silently. moto starts one worker per allowed iteration."""
    component_cls: Any = inline_iteration_component.InlineIterationComponent
    original_eval_body = component_cls._eval_body

    def eval_body(self: Any, env: Any) -> None:
        eval_input = env.stack[-1]
        wanted = eval_input.max_concurrency
        if wanted == DEFAULT_MAX_CONCURRENCY_VALUE or wanted > INLINE_MAP_MAX_CONCURRENCY:
            # The component reads the attribute once, to size its pool of workers.
            eval_input.max_concurrency = min(
                len(eval_input.input_items) or 1, INLINE_MAP_MAX_CONCURRENCY
            )
        original_eval_body(self, env)

    component_cls._eval_body = eval_body


def history_stops_at_25000_events(hub: ActivityHub) -> None:
    """(b) An execution's history holds at most 25,000 events. Event 25,000 is either
    ExecutionSucceeded, or ExecutionFailed with States.Runtime and AWS's cause; the execution
    then ends FAILED, its open activity tasks close, and nothing more is recorded."""
    env_cls: Any = environment.Environment
    original_init = env_cls.__init__
    original_set_error = env_cls.set_error

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        # Frames replace this manager with their execution's: only a root keeps its own, and
        # the root's is the execution's history.
        manager = self.event_manager
        manager.rsql_owner = weakref.ref(self)
        manager.rsql_lock = threading.Lock()
        manager.rsql_full = False

    def set_error(self: Any, error: Any) -> None:
        if getattr(self, "rsql_history_full", False):
            return  # the history limit's failure is final; later failures are its fallout
        original_set_error(self, error)

    env_cls.__init__ = init
    env_cls.set_error = set_error

    manager_cls: Any = event_manager.EventManager
    original_add_event = manager_cls.add_event

    def add_event(self: Any, context: Any, event_type: Any, *args: Any, **kwargs: Any) -> int:
        owner = getattr(self, "rsql_owner", None)
        env = owner() if owner is not None else None
        if env is None:  # a manager that is no execution's history (a Distributed Map run)
            return int(original_add_event(self, context, event_type, *args, **kwargs))
        with self.rsql_lock:
            if self.rsql_full:
                return int(context.last_published_event_id)
            if (
                self._event_id_gen._next_id < MAX_HISTORY_EVENTS
                or event_type == HistoryEventType.ExecutionSucceeded
            ):
                return int(original_add_event(self, context, event_type, *args, **kwargs))
            self.rsql_full = True
            details = ExecutionFailedEventDetails(
                error=HISTORY_LIMIT_ERROR, cause=HISTORY_LIMIT_CAUSE
            )
            event_id = original_add_event(
                self,
                context,
                HistoryEventType.ExecutionFailed,
                _event_details(executionFailedEventDetails=details),
            )
        env.rsql_history_full = True
        original_set_error(env, details)
        hub.close_execution(env.states.context_object.context_object_data["Execution"]["Id"])
        return int(event_id)

    manager_cls.add_event = add_event


def data_limit_is_terminal() -> None:
    """(c) States.DataLimitExceeded is not matched by States.ALL in a Catch or Retry (only by
    its own name): AWS calls it terminal. moto's States.ALL matches every error."""
    decl_cls: Any = error_equals_decl.ErrorEqualsDecl
    original_eval_body = decl_cls._eval_body

    def eval_body(self: Any, env: Any) -> None:
        error_name = env.stack[-1]
        if error_name == _DATA_LIMIT and _DATA_LIMIT not in self.error_names:
            env.stack.pop()
            env.stack.append(False)  # what the declaration answers: no match
            return
        original_eval_body(self, env)

    decl_cls._eval_body = eval_body


def payload_limit_is_262144_bytes() -> None:
    """(c) moto fails a state output of exactly 262,144 bytes; AWS allows up to that size."""

    def is_within_size_quota(value: Any) -> bool:
        return payload_bytes(value) <= MAX_PAYLOAD_BYTES

    for name, module in list(sys.modules.items()):
        if name.startswith("moto.stepfunctions.parser") and hasattr(module, "is_within_size_quota"):
            module.is_within_size_quota = is_within_size_quota  # type: ignore[attr-defined]


def task_input_within_the_payload_limit() -> None:
    """(c) A Task state's input after Parameters is held to 262,144 bytes, as AWS does; moto
    hands an activity worker (or a service) any size."""
    # Activity and Lambda tasks evaluate their Parameters in methods of their own.
    for task_cls in (
        state_task.StateTask,
        state_task_activitiy.StateTaskActivity,
        state_task_lambda.StateTaskLambda,
    ):
        _check_parameters_of(task_cls)
    # An activity Task re-raises every FailureEventException past its Catch: not this one.
    activity_cls: Any = state_task_activitiy.StateTaskActivity
    original_from_error = activity_cls._from_error

    def from_error(self: Any, env: Any, ex: Exception) -> Any:
        if isinstance(ex, _InputTooLarge):
            return ex.failure_event
        return original_from_error(self, env, ex)

    activity_cls._from_error = from_error


class _InputTooLarge(FailureEventException):
    """A Task's input after Parameters is over the limit: States.DataLimitExceeded."""


def _check_parameters_of(task_cls: Any) -> None:
    original_eval_parameters = task_cls.__dict__["_eval_parameters"]

    def eval_parameters(self: Any, env: Any) -> Any:
        parameters = original_eval_parameters(self, env)
        if payload_bytes(parameters) > MAX_PAYLOAD_BYTES:
            cause = (
                f"The state/task '{self.name}' has an input with a size exceeding the maximum "
                "number of bytes service limit."
            )
            details = TaskFailedEventDetails(error=DATA_LIMIT_ERROR, cause=cause)
            raise _InputTooLarge(
                failure_event=FailureEvent(
                    env=env,
                    error_name=_DATA_LIMIT,
                    event_type=HistoryEventType.TaskFailed,
                    event_details=_event_details(taskFailedEventDetails=details),
                )
            )
        return parameters

    task_cls._eval_parameters = eval_parameters


def execution_input_within_the_payload_limit() -> None:
    """(c) StartExecution refuses an input above 262,144 bytes with a ValidationException (HTTP
    400), as AWS answers a too-long member; moto starts the execution."""
    backend_cls: Any = StepFunctionsParserBackend
    original_start_execution = backend_cls.start_execution

    def start_execution(self: Any, state_machine_arn: str, *args: Any, **kwargs: Any) -> Any:
        execution_input = kwargs.get("execution_input", args[1] if len(args) > 1 else None)
        if execution_input is not None and payload_bytes(execution_input) > MAX_PAYLOAD_BYTES:
            raise ValidationException(
                "1 validation error detected: Value at 'input' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_PAYLOAD_BYTES}"
            )
        return original_start_execution(self, state_machine_arn, *args, **kwargs)

    backend_cls.start_execution = start_execution
