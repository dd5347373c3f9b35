"""The activity task's input (docs/contracts.md, "Activity task input"), validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent import errors


class TaskInput(BaseModel):
    """The activity task's input (docs/contracts.md, "Activity task input"). Strict: a number
    where a string belongs, or the reverse, is a mistake in the state machine, not a value
    to coerce."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    workflow_id: str = Field(min_length=1, max_length=1024)
    workflow_execution_id: str = Field(min_length=1, max_length=1024)
    stage_index: int = Field(ge=0)
    job_name: str = Field(min_length=1, max_length=1024)
    args: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(gt=0)
    heartbeat_seconds: float | None = Field(default=None, gt=0)
    restart_of: str | None = None
    # Run the script as the AWS sample did: `<script> <legacy dir> <secret id> [args...]`.
    legacy_args: bool = False
    # `${NAME}` values for `.sql` jobs (the workflow's `variables`).
    variables: dict[str, str] = Field(default_factory=dict)
    # The Task state's $$.State.RetryCount (0 on the first try); absent from older state
    # machines. Never fails a job: anything but a count is read as absent.
    retry_count: int | None = None

    @field_validator("retry_count", mode="before")
    @classmethod
    def _count_or_nothing(cls, value: object) -> int | None:
        return value if type(value) is int and value >= 0 else None

    @property
    def attempt(self) -> int | None:
        """Which try of the job this is (1 = the first), when the state machine says."""
        return None if self.retry_count is None else self.retry_count + 1


def parse_task_input(raw: str) -> TaskInput:
    """Validate the task input; raises InvalidInput naming every bad field."""
    try:
        return TaskInput.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors()
        )
        raise errors.InvalidInput(f"The task input is not valid: {problems}.") from None
