"""Agent settings: environment variables prefixed `RSQL_AGENT_`, optionally also read from the
file `RSQL_AGENT_ENV_FILE` names (KEY=VALUE lines, the format of systemd's EnvironmentFile).

Built once at start and passed down; nothing reads the environment after that. Names carry
their units (`_s` seconds, `_bytes`), related settings share a prefix.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Final

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX: Final = "RSQL_AGENT_"
ENV_FILE_VARIABLE: Final = "RSQL_AGENT_ENV_FILE"
# The EC2 instance metadata service; a setting so tests can point it at a fake on 127.0.0.1.
DEFAULT_IMDS_ENDPOINT: Final = "http://169.254.169.254"
# Step Functions holds GetActivityTask open for 60 s when there is no work: a read timeout
# below that turns every empty poll into a client error.
MIN_POLL_READ_TIMEOUT_S: Final = 65.0
# One CloudWatch Logs event holds at most 256 KiB including 26 bytes of overhead; longer
# lines are split by the shipper, this caps what one local log line may hold.
MAX_EVENT_BYTES: Final = 256 * 1024


class SettingsError(Exception):
    """Settings are missing or invalid; the message names each bad setting and why."""


class Settings(BaseSettings):
    """Everything the agent can be told. Field `x` is read from `RSQL_AGENT_X`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # The env file is shared with rsql-cloud and carries AWS_* and PG* keys too.
        extra="ignore",
        frozen=True,
    )

    # What to poll and where the database credentials are.
    activity_arn: str = Field(min_length=1, description="Step Functions activity to poll")
    secret_id: str | None = Field(
        default=None, description="Secrets Manager secret with the Redshift connection"
    )

    # Identity of this host in audit rows and task output.
    instance_id: str | None = Field(
        default=None, description="EC2 instance id; looked up with IMDSv2 when unset"
    )
    imds_endpoint_url: str = DEFAULT_IMDS_ENDPOINT
    imds_timeout_s: float = Field(default=2.0, gt=0)
    worker_name: str = Field(default_factory=socket.gethostname, min_length=1)

    # Files.
    script_dir: Path
    log_dir: Path = Path("/var/log/rsql-agent")
    state_dir: Path = Path("/var/lib/rsql-agent")
    shell: Path = Path("/bin/bash")
    # Scripts saved with Windows line endings run from a private copy with Unix ones; when off,
    # such a script fails at once with a cause that says how to convert it.
    normalise_crlf: bool = True
    # The RSQL client `.sql` jobs run through: a path, or a name looked up on the job's PATH.
    rsql_bin: str = Field(default="rsql", min_length=1)

    # Capacity.
    concurrency: int = Field(default=8, ge=1, le=1024)
    pollers: int = Field(default=2, ge=1, le=64)
    # While tasks keep coming, up to this many polls at once (0 = one per slot).
    max_pollers: int = Field(default=0, ge=0, le=1024)

    # Timing.
    heartbeat_interval_s: float = Field(default=20.0, gt=0)
    drain_timeout_s: float = Field(default=60.0, ge=0)
    kill_grace_s: float = Field(default=5.0, ge=0, description="SIGTERM to SIGKILL")
    poll_read_timeout_s: float = Field(default=70.0, ge=MIN_POLL_READ_TIMEOUT_S)
    poll_error_backoff_max_s: float = Field(default=30.0, gt=0)
    aws_call_deadline_s: float = Field(default=60.0, gt=0, description="retries of one call")
    aws_connect_timeout_s: float = Field(default=5.0, gt=0)
    aws_read_timeout_s: float = Field(default=30.0, gt=0)
    aws_max_calls_per_s: int = Field(default=200, ge=1, description="over all APIs")
    # Calls per second by API name, over agent.ratelimit.DEFAULT_RATES_PER_S.
    aws_rates_per_s: dict[str, float] = Field(default_factory=dict)
    outage_warning_interval_s: float = Field(
        default=60.0, gt=0, description="at most one aws_unreachable warning this often"
    )

    # Output.
    log_group: str = Field(default="/rsql/jobs", min_length=1, max_length=512)
    log_flush_interval_s: float = Field(default=1.0, gt=0)
    log_flush_wait_s: float = Field(
        default=5.0, ge=0, description="a completion waits this long for the job's last lines"
    )
    log_spool_max_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        description="output held in memory while the local log cannot be written",
    )
    log_max_line_bytes: int = Field(default=MAX_EVENT_BYTES, ge=1024, le=4 * MAX_EVENT_BYTES)
    output_tail_lines: int = Field(default=20, ge=0, le=1000)

    # Tables.
    job_audit_table: str = Field(default="rsql-job-audit", min_length=3, max_length=255)

    # Auto Scaling scale-in and Spot interruptions (agent/lifecycle.py).
    lifecycle_watch: bool = Field(default=True, description="watch IMDS for scale-in and Spot")
    # A Spot notice gives two minutes: look at least every 10 s.
    lifecycle_poll_interval_s: float = Field(default=5.0, gt=0, le=10)
    autoscaling_group_name: str | None = Field(default=None, max_length=255)
    lifecycle_hook_name: str | None = Field(default=None, max_length=255)
    # Auto Scaling keeps a lifecycle action open 48 h at most.
    lifecycle_drain_timeout_s: float = Field(default=14400.0, ge=0, le=172800)
    lifecycle_heartbeat_interval_s: float = Field(default=60.0, gt=0, le=7200)
    spot_margin_s: float = Field(default=30.0, ge=0, le=110)

    # Metrics (agent/metrics.py; docs/metrics.md names them).
    metrics_enabled: bool = True
    metrics_log_group: str = Field(default="/rsql/metrics", min_length=1, max_length=512)
    metrics_namespace: str = Field(default="RSQL/Agent", pattern=r"^[A-Za-z0-9_.\-/#:]{1,255}$")
    metrics_interval_s: float = Field(default=60.0, ge=1, le=3600)

    # Housekeeping (agent/housekeeping.py): local job logs and the journal.
    housekeeping_enabled: bool = True
    housekeeping_interval_s: float = Field(default=3600.0, gt=0)
    log_dir_max_age_days: float = Field(default=14.0, gt=0)
    log_dir_max_bytes: int = Field(default=1024**3, ge=1024)
    journal_max_age_days: float = Field(default=7.0, gt=0)
    journal_max_bytes: int = Field(default=64 * 1024**2, ge=1024)

    @field_validator("activity_arn")
    @classmethod
    def _activity_arn_shape(cls, value: str) -> str:
        if not value.startswith("arn:") or ":activity:" not in value:
            raise ValueError("must be an activity ARN (arn:aws:states:REGION:ACCOUNT:activity:X)")
        return value

    @field_validator("metrics_namespace")
    @classmethod
    def _not_aws_namespace(cls, value: str) -> str:
        if value.startswith("AWS/"):
            raise ValueError("namespaces starting with AWS/ are reserved for AWS services")
        return value

    @field_validator("imds_endpoint_url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        if not value.startswith("http://"):
            raise ValueError("must be an http:// URL (IMDS speaks plain HTTP on a local link)")
        return value

    @field_validator("secret_id", "instance_id", "autoscaling_group_name", "lifecycle_hook_name")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # systemd env files often carry `KEY=` for "not set".
        return value or None

    @field_validator("script_dir")
    @classmethod
    def _script_dir_exists(cls, value: Path) -> Path:
        if not value.is_absolute():
            value = value.absolute()
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        # Resolved once so containment checks compare like with like.
        return value.resolve()

    @field_validator("shell")
    @classmethod
    def _shell_is_executable(cls, value: Path) -> Path:
        if not (value.is_file() and os.access(value, os.X_OK)):
            raise ValueError(f"{value} is not an executable file")
        return value

    @field_validator("log_dir", "state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.absolute()

    @model_validator(mode="after")
    def _dirs_differ(self) -> Settings:
        if self.log_dir == self.script_dir or self.state_dir == self.script_dir:
            raise ValueError("log_dir and state_dir must not be the script directory")
        return self

    @property
    def effective_pollers(self) -> int:
        """A poller holds a concurrency slot while it polls, so more pollers than slots idle."""
        return min(self.pollers, self.concurrency)

    @property
    def effective_max_pollers(self) -> int:
        """Polls open at once while tasks keep coming: one per free slot at most."""
        most = self.max_pollers or self.concurrency
        return max(self.effective_pollers, min(most, self.concurrency))

    @classmethod
    def load(cls, env_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
        """Read the environment (and `env_file`, else the file RSQL_AGENT_ENV_FILE names);
        real environment variables win over the file, `overrides` win over both.

        Raises SettingsError with one line per bad or missing setting.
        """
        path = env_file or os.environ.get(ENV_FILE_VARIABLE) or None
        if path is not None and not Path(path).is_file():
            raise SettingsError(f"{ENV_FILE_VARIABLE}: no such file: {path}")
        try:
            return cls(**{"_env_file": path, **overrides})
        except ValidationError as exc:
            raise SettingsError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """One line per problem, named by its environment variable, without echoing values that
    might be secrets."""
    lines = ["invalid agent settings:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        name = f"{ENV_PREFIX}{field.upper()}" if error["loc"] else field
        message = "is required" if error["type"] == "missing" else error["msg"]
        message = message.removeprefix("Value error, ")
        lines.append(f"  {name}: {message}")
    return "\n".join(lines)
