"""Names shared by the agent, the state machine and the CLI: one place for every attribute,
status word and environment variable, so a typo is a NameError rather than a silent miss.
docs/contracts.md is where operators read them; keep the two in step."""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

# Status words of the audit tables (docs/contracts.md, "Status words").
RUNNING: Final = "Running"
COMPLETED: Final = "Completed"
FAILED: Final = "Failed"
TIMED_OUT: Final = "TimedOut"
CANCELLED: Final = "Cancelled"
SKIPPED: Final = "Skipped"
ABANDONED: Final = "Abandoned"
Status = Literal["Running", "Completed", "Failed", "TimedOut", "Cancelled", "Skipped", "Abandoned"]


class JobAudit:
    """Attributes of the job audit table (PK job_name, SK workflow_execution_id)."""

    JOB_NAME: Final = "job_name"
    WORKFLOW_EXECUTION_ID: Final = "workflow_execution_id"
    WORKFLOW_ID: Final = "workflow_id"
    STAGE_INDEX: Final = "stage_index"
    EXECUTION_STATUS: Final = "execution_status"
    EXECUTION_START_TS: Final = "execution_start_ts"
    EXECUTION_END_TS: Final = "execution_end_ts"
    EXIT_CODE: Final = "exit_code"
    DURATION_MS: Final = "duration_ms"
    INSTANCE_ID: Final = "instance_id"
    WORKER_NAME: Final = "worker_name"
    LOG_STREAM: Final = "log_stream"
    ATTEMPT: Final = "attempt"
    # Which attempt wrote the row last: the short id of its task token (agent.logs.token_id).
    ATTEMPT_ID: Final = "attempt_id"
    ERROR: Final = "error"
    CAUSE: Final = "cause"


class WorkflowAudit:
    """Attributes of the workflow audit table (PK workflow_execution_id, SK workflow_id)."""

    WORKFLOW_EXECUTION_ID: Final = "workflow_execution_id"
    WORKFLOW_ID: Final = "workflow_id"
    EXECUTION_STATUS: Final = "execution_status"
    EXECUTION_START_TS: Final = "execution_start_ts"
    EXECUTION_END_TS: Final = "execution_end_ts"
    RSQL_JOBS: Final = "rsql_jobs"
    ERROR: Final = "error"
    CAUSE: Final = "cause"
    RESTART_OF: Final = "restart_of"


class Config:
    """Attributes of the config table item (PK workflow_id); the AWS sample's shape plus ours."""

    WORKFLOW_ID: Final = "workflow_id"
    WORKFLOW_DESCRIPTION: Final = "workflow_description"
    WORKFLOW_STAGES: Final = "workflow_stages"
    EXECUTION_FLAG: Final = "execution_flag"
    EXECUTION_TYPE: Final = "execution_type"
    SCRIPTS: Final = "scripts"
    STAGE_DESCRIPTION: Final = "stage_description"
    MAX_PARALLEL: Final = "max_parallel"
    TIMEOUT_SECONDS: Final = "timeout_seconds"
    HEARTBEAT_SECONDS: Final = "heartbeat_seconds"
    # Optional: {"expression", "timezone", "enabled"}; `workflow put` keeps an EventBridge
    # Scheduler schedule of the same name in step with it. The state machine ignores it.
    SCHEDULE: Final = "schedule"
    # In items written before plans: the flat job list (the state machine now flattens the
    # stages' scripts itself). Read past, never written.
    RSQL_JOBS: Final = "rsql_jobs"
    # Scripts written for the AWS sample get `<dir with get_redshift_creds.sh> <secret id>` as
    # their arguments: per workflow, per stage overriding it.
    LEGACY_ARGS: Final = "legacy_args"
    # `${NAME}` values for `.sql` jobs (a map), and the same as a JSON string for the state
    # machine, which cannot turn a DynamoDB map into plain JSON (written by `workflow put`).
    VARIABLES: Final = "variables"
    VARIABLES_JSON: Final = "variables_json"
    # Per stage, written by `workflow put`: how the state machine runs it (cloud/plan.py).
    PLAN: Final = "plan"
    # The lock that keeps one workflow from running twice at once: the execution holding it.
    RUNNING_EXECUTION_ID: Final = "running_execution_id"


# Environment the agent gives every script (besides the connection settings of the secret).
JOB_ENV_WORKFLOW_ID: Final = "RSQL_WORKFLOW_ID"
JOB_ENV_WORKFLOW_EXECUTION_ID: Final = "RSQL_WORKFLOW_EXECUTION_ID"
JOB_ENV_JOB_NAME: Final = "RSQL_JOB_NAME"


# EC2 instance tags the agent reads to find its Auto Scaling lifecycle hook (when the settings
# do not name them): the group's name, set by Auto Scaling on every instance it launches, and
# the termination hook's name, set on the group with PropagateAtLaunch by `rsql-cloud fleet`.
AUTOSCALING_GROUP_TAG: Final = "aws:autoscaling:groupName"
LIFECYCLE_HOOK_TAG: Final = "rsql:lifecycle-hook"


def iso_utc_ms(moment: float | dt.datetime) -> str:
    """`2026-11-27T08:01:02.123Z`: ISO-8601 UTC with milliseconds and a Z, the one timestamp
    format of every table (Step Functions writes its context object times the same way).
    Takes epoch seconds or an aware datetime."""
    if isinstance(moment, dt.datetime):
        utc = moment.astimezone(dt.UTC)
    else:
        utc = dt.datetime.fromtimestamp(moment, tz=dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def log_stream_name(
    workflow_id: str, workflow_execution_id: str, job_name: str, attempt: int
) -> str:
    """`<workflow_id>/<workflow_execution_id>/<job_name>`, plus `/<attempt>` from the 2nd on."""
    base = f"{workflow_id}/{workflow_execution_id}/{job_name}"
    return base if attempt <= 1 else f"{base}/{attempt}"
