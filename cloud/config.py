"""The workflow config: the AWS sample's config item, validated, plus our optional settings.

A workflow file is the sample's item as plain JSON: the AWS sample's config item is accepted as
it is (`tests/data/aws_sample_blog_test_workflow.json`). Optional: per stage `max_parallel`
(0 = unlimited) and `timeout_seconds`, per workflow `heartbeat_seconds`, `legacy_args` (a stage
may override it), `variables` (`${NAME}` values for `.sql` jobs) and `schedule` (an EventBridge
Scheduler expression that starts the workflow by itself). Every mistake is reported with where
it is (`workflow_stages[1].execution_type: must be 'sequential' or 'parallel', got 'paralel'`),
all of them at once, and unknown fields are errors: a typo in an optional field must not
silently fall back to the default.

`Workflow.to_item()` is the DynamoDB item the state machine reads: native types, every default
filled in (the state machine reads `timeout_seconds` and `heartbeat_seconds` unconditionally,
ASL has no defaults) and each stage's `plan` (`cloud/plan.py`): how the state machine runs it.
A workflow that cannot run within AWS's limits is refused here too (`cloud/sizing.py`).
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from agent import items
from agent.schema import Config as C
from cloud import schedule_expressions, sizing
from cloud.aws import CloudError
from cloud.plan import plan_workflow

DEFAULT_TIMEOUT_SECONDS: Final = 86_400
DEFAULT_HEARTBEAT_SECONDS: Final = 60
# The state machine gives a task `timeout_seconds + 60` (so the agent's own timeout report
# wins); Step Functions' largest TimeoutSeconds is 99,999,999.
TASK_TIMEOUT_MARGIN_S: Final = 60
MAX_TIMEOUT_SECONDS: Final = 99_999_999 - TASK_TIMEOUT_MARGIN_S
MAX_JOB_NAME_LENGTH: Final = 255
# Also part of execution names and log stream names: keep it to characters both allow.
_WORKFLOW_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
# `${NAME}` placeholders of `.sql` jobs.
_VARIABLE_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class ConfigError(CloudError):
    """A workflow config with mistakes; one line per mistake, each naming where it is."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


def _check_job_name(name: str) -> str:
    # The agent runs `<script_dir>/<job_name>` and the name is part of a log stream name
    # (no ':' or '*') and of the audit table's key: refuse anything that could escape the
    # script directory or read as an option, here, before any host sees it.
    if not name:
        raise ValueError("job name must not be empty")
    if len(name) > MAX_JOB_NAME_LENGTH:
        raise ValueError(f"job name is longer than {MAX_JOB_NAME_LENGTH} characters")
    if "/" in name or "\\" in name:
        raise ValueError(f"job name {name!r} must not contain a path separator")
    if ".." in name:
        raise ValueError(f"job name {name!r} must not contain '..'")
    if name.startswith("-"):
        raise ValueError(f"job name {name!r} must not start with '-'")
    if ":" in name or "*" in name:
        raise ValueError(f"job name {name!r} must not contain ':' or '*' (log stream names)")
    if _CONTROL_RE.search(name) or name != name.strip():
        raise ValueError(f"job name {name!r} has control characters or surrounding spaces")
    return name


def _check_workflow_id(value: str) -> str:
    if not _WORKFLOW_ID_RE.match(value):
        raise ValueError(
            f"must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit; "
            f"got {value!r}"
        )
    return value


def _check_variable_name(name: str) -> str:
    if not _VARIABLE_NAME_RE.match(name):
        raise ValueError(
            f"variable name {name!r} must be letters, digits and '_', not starting with a digit"
        )
    return name


def _check_expression(text: str) -> str:
    schedule_expressions.parse(text)  # ExpressionError is a ValueError: pydantic reports it
    return text


def _check_timezone(name: str) -> str:
    schedule_expressions.check_timezone(name)
    return name


JobName = Annotated[str, AfterValidator(_check_job_name)]
VariableName = Annotated[str, AfterValidator(_check_variable_name)]
WorkflowId = Annotated[str, AfterValidator(_check_workflow_id)]
ScheduleExpression = Annotated[str, AfterValidator(_check_expression)]
TimeZone = Annotated[str, AfterValidator(_check_timezone)]


class _Model(BaseModel):
    # strict: "5" is not 5 and true is not 1; extra=forbid: a typo is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Stage(_Model):
    execution_flag: Literal["y", "n"]
    execution_type: Literal["sequential", "parallel"]
    scripts: list[JobName] = Field(min_length=1)
    stage_description: str = ""
    max_parallel: int = Field(default=0, ge=0)
    timeout_seconds: int = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0, le=MAX_TIMEOUT_SECONDS)
    # None: the workflow's setting (the state machine fills it in).
    legacy_args: bool | None = None

    @property
    def enabled(self) -> bool:
        return self.execution_flag == "y"


class Schedule(_Model):
    """When EventBridge Scheduler starts the workflow (`workflow put` keeps the schedule)."""

    expression: ScheduleExpression
    timezone: TimeZone = "UTC"
    enabled: bool = True


class Workflow(_Model):
    workflow_id: WorkflowId
    workflow_description: str = ""
    workflow_stages: list[Stage] = Field(min_length=1)
    heartbeat_seconds: int = Field(default=DEFAULT_HEARTBEAT_SECONDS, ge=1, le=MAX_TIMEOUT_SECONDS)
    legacy_args: bool = False
    variables: dict[VariableName, str] = Field(default_factory=dict)
    schedule: Schedule | None = None

    @property
    def job_names(self) -> list[str]:
        """Every job of every stage, in order (`rsql_jobs`)."""
        return [job for stage in self.workflow_stages for job in stage.scripts]

    @model_validator(mode="after")
    def _check_across_stages(self) -> Workflow:
        problems = [*self._duplicate_jobs(), *self._misplaced_settings()]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _duplicate_jobs(self) -> list[str]:
        # The audit table is keyed by (job_name, execution): a second run of the same script
        # in one execution would overwrite the first one's row.
        first_seen: dict[str, str] = {}
        problems = []
        for s, stage in enumerate(self.workflow_stages):
            for j, job in enumerate(stage.scripts):
                where = f"workflow_stages[{s}].scripts[{j}]"
                if job in first_seen:
                    problems.append(
                        f"{where}: duplicate job name {job!r} (also {first_seen[job]}); job "
                        "names must be unique within a workflow"
                    )
                else:
                    first_seen[job] = where
        return problems

    def _misplaced_settings(self) -> list[str]:
        problems = []
        for s, stage in enumerate(self.workflow_stages):
            where = f"workflow_stages[{s}]"
            if stage.execution_type == "sequential" and stage.max_parallel > 1:
                problems.append(
                    f"{where}.max_parallel: only applies to parallel stages (a sequential "
                    f"stage runs one job at a time), got {stage.max_parallel}"
                )
            # Step Functions wants HeartbeatSeconds below the task's TimeoutSeconds.
            task_timeout = stage.timeout_seconds + TASK_TIMEOUT_MARGIN_S
            if self.heartbeat_seconds >= task_timeout:
                problems.append(
                    f"heartbeat_seconds: must be less than {where}.timeout_seconds + "
                    f"{TASK_TIMEOUT_MARGIN_S} = {task_timeout}, got {self.heartbeat_seconds}"
                )
        return problems

    def to_item(self) -> dict[str, Any]:
        """The config table item: native DynamoDB types, every default filled in, and each
        stage's plan."""
        # The model's field names are the item's attribute names (`from_item` relies on it). A
        # stage without its own legacy_args has no such attribute: the state machine then fills
        # in the workflow's. `variables_json` is the map as the state machine hands it on.
        values = self.model_dump(exclude_none=True)
        values[C.VARIABLES_JSON] = json.dumps(self.variables, sort_keys=True)
        for stage, plan in zip(values[C.WORKFLOW_STAGES], plan_workflow(self), strict=True):
            stage[C.PLAN] = plan.to_values()
        return items.to_item(values)

    @classmethod
    def from_item(cls, item: dict[str, Any], source: str = "config item") -> Workflow:
        """The reverse of `to_item` (the lock, the plans and the job list that items written
        before plans had are not config)."""
        plain = items.from_item(item)
        for name in (C.RSQL_JOBS, C.RUNNING_EXECUTION_ID, C.VARIABLES_JSON):
            plain.pop(name, None)
        for stage in plain.get(C.WORKFLOW_STAGES) or []:
            if isinstance(stage, dict):
                stage.pop(C.PLAN, None)
        return parse_workflow(plain, source)


def parse_workflow(data: Any, source: str = "workflow", *, within_limits: bool = True) -> Workflow:
    """Validate plain JSON data; raise ConfigError listing every mistake, and (unless
    `within_limits` is False) every way it would not run within AWS's limits."""
    try:
        workflow = Workflow.model_validate(data)
    except ValidationError as exc:
        problems = [line for error in exc.errors() for line in _describe(error)]
        raise ConfigError(source, problems) from None
    # Only a workflow that is otherwise valid can be planned and measured.
    problems = sizing.problems(workflow) if within_limits else []
    if problems:
        raise ConfigError(source, problems)
    return workflow


def load_workflow_file(path: Path, *, within_limits: bool = True) -> Workflow:
    """Read and validate a workflow file; unreadable files and bad JSON are ConfigErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(path), [f"cannot read the file: {reason}"]) from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            str(path), [f"line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}"]
        ) from None
    except _DuplicateKey as exc:
        raise ConfigError(str(path), [str(exc)]) from None
    return parse_workflow(data, str(path), within_limits=within_limits)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys: a copy-paste slip would pass silently.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


# -- pydantic's errors, said the way an operator reads them --------------------------------------

_FIELDS: Final = sorted(
    set(Workflow.model_fields) | set(Stage.model_fields) | set(Schedule.model_fields)
)
_TYPE_WORDS: Final = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}
_DYNAMODB_TYPES: Final = frozenset({"S", "N", "L", "M", "BOOL", "NULL", "SS", "NS"})
_LIMITS: Final = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _describe(error: ErrorDetails) -> list[str]:
    where = _location(error["loc"])
    message = _message(error)
    if not where:
        return message.splitlines()
    return [f"{where}: {message}"]


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a mapping's key: the key is named already
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    given = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        return f"must be {ctx['expected']}, got {_show(given)}"
    if kind == "extra_forbidden":
        return "unknown field" + _did_you_mean(str(error["loc"][-1]))
    if kind == "missing":
        return "required field is missing"
    if kind == "too_short":
        return "must not be empty"
    if kind in _LIMITS:
        limit = next(iter(ctx.values()))
        return f"must be {_LIMITS[kind]} {limit}, got {_show(given)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in _TYPE_WORDS:
        if kind == "model_type" and not error["loc"]:
            return f"the config must be a JSON object (one workflow), got {_json_type(given)}"
        hint = ""
        if isinstance(given, dict) and len(given) == 1 and next(iter(given)) in _DYNAMODB_TYPES:
            hint = (
                " (this looks like DynamoDB JSON: write plain JSON values as the AWS sample does)"
            )
        return f"must be {_TYPE_WORDS[kind]}, got {_json_type(given)} {_show(given)}{hint}"
    return str(error["msg"])


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, _FIELDS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list"}
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return names.get(type(value), type(value).__name__)
