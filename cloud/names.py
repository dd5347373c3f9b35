"""Every cloud resource name derives from the stack name, so one account holds several stacks
side by side (`rsql` for production, `test1` for a trial) and a name never needs a lookup."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass

DEFAULT_STACK_NAME = "rsql"
# The environment variable every `rsql-cloud` command reads its default `--stack-name` from.
STACK_NAME_ENV = "RSQL_STACK_NAME"
# Secrets Manager secret holding the Redshift connection (host, port, username, password, dbname).
DEFAULT_SECRET_ID = "rsql/redshift"  # noqa: S105 (a secret id, not a secret)
_STACK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,39}$")


@dataclass(frozen=True)
class StackNames:
    """Resource names of one stack; ARNs need the account and region and live in deploy."""

    stack_name: str = DEFAULT_STACK_NAME

    def __post_init__(self) -> None:
        if not _STACK_NAME_RE.match(self.stack_name):
            raise ValueError(
                f"invalid stack name {self.stack_name!r}: 1-40 characters, letters, digits and "
                "'-', starting with a letter"
            )

    @property
    def config_table(self) -> str:
        return f"{self.stack_name}-config"

    @property
    def job_audit_table(self) -> str:
        return f"{self.stack_name}-job-audit"

    @property
    def workflow_audit_table(self) -> str:
        return f"{self.stack_name}-workflow-audit"

    @property
    def activity(self) -> str:
        return f"{self.stack_name}-jobs"

    @property
    def state_machine(self) -> str:
        return f"{self.stack_name}-workflow"

    @property
    def state_machine_role(self) -> str:
        return f"{self.stack_name}-workflow-role"

    @property
    def autoscaling_group(self) -> str:
        """The Auto Scaling group of agent hosts (`rsql-cloud fleet`)."""
        return f"{self.stack_name}-agents"

    @property
    def lifecycle_hook(self) -> str:
        """The group's termination lifecycle hook: the agents drain, then complete it."""
        return f"{self.stack_name}-drain"

    @property
    def agent_role(self) -> str:
        """IAM role (and instance profile) of the fleet's hosts."""
        return f"{self.stack_name}-agent-role"

    @property
    def launch_template(self) -> str:
        return f"{self.stack_name}-agents"

    def scaling_policy(self, direction: str) -> str:
        """`<stack>-agents-scale-out` / `-scale-in`; also the name of the alarm driving it."""
        return f"{self.stack_name}-agents-scale-{direction}"

    @property
    def schedule_group(self) -> str:
        """EventBridge Scheduler group: one schedule per workflow, named after the workflow."""
        return f"{self.stack_name}-schedules"

    @property
    def scheduler_role(self) -> str:
        return f"{self.stack_name}-scheduler-role"

    @property
    def schedule_dlq(self) -> str:
        """SQS queue where the scheduler puts the starts it could not make."""
        return f"{self.stack_name}-schedule-dlq"

    @property
    def alarm_topic(self) -> str:
        """SNS topic the alarms notify (`deploy --alarms EMAIL`)."""
        return f"{self.stack_name}-alarms"

    def alarm(self, what: str) -> str:
        return f"{self.stack_name}-{what}"

    @property
    def dashboard(self) -> str:
        return self.stack_name

    @property
    def topic(self) -> str:
        return f"{self.stack_name}-notifications"

    @property
    def log_group(self) -> str:
        # The default stack keeps the documented `/rsql/jobs`.
        return f"/{self.stack_name}/jobs"

    @property
    def metrics_log_group(self) -> str:
        """Where the agents write their metrics (CloudWatch embedded metric format)."""
        return f"/{self.stack_name}/metrics"


def stack_names_argument(value: str) -> StackNames:
    """argparse `type=` for `--stack-name`: a bad name is a usage error, said in one line."""
    try:
        return StackNames(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_stack_name_option(parser: argparse.ArgumentParser, what: str) -> None:
    """`--stack-name NAME` as every `rsql-cloud` command takes it (parsed into StackNames)."""
    parser.add_argument(
        "--stack-name",
        type=stack_names_argument,
        default=os.environ.get(STACK_NAME_ENV, DEFAULT_STACK_NAME),
        metavar="NAME",
        help=f"{what} (default: ${STACK_NAME_ENV} or {DEFAULT_STACK_NAME!r})",
    )
