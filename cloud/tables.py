"""The three DynamoDB tables: keys as in the AWS sample (config by `workflow_id`, job audit by
`job_name` + `workflow_execution_id`, workflow audit by `workflow_execution_id` +
`workflow_id`), all string keys, on-demand capacity; plus one index of ours on the workflow
audit table, so a workflow's runs are a Query, not a Scan of every run of every workflow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agent.schema import Config, JobAudit, WorkflowAudit
from cloud.names import StackNames

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import WaiterConfigTypeDef

BILLING_MODE: Final = "PAY_PER_REQUEST"
# Table creation takes seconds on AWS; a minute and a half of patience, then a clear failure.
WAITER_CONFIG: Final[WaiterConfigTypeDef] = {"Delay": 2, "MaxAttempts": 45}
# The workflow audit table's index: a workflow's runs by start time (`workflow history`, the
# report's sparklines). Every attribute but `cause` (up to 32 KB, read from the table itself).
RUNS_BY_WORKFLOW_INDEX: Final = "by_workflow_start"
RUNS_BY_WORKFLOW_ATTRIBUTES: Final = (
    WorkflowAudit.EXECUTION_STATUS,
    WorkflowAudit.EXECUTION_END_TS,
    WorkflowAudit.ERROR,
    WorkflowAudit.RESTART_OF,
    WorkflowAudit.RSQL_JOBS,
)


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index (string keys; on-demand, so no throughput of its own)."""

    name: str
    hash_key: str
    range_key: str
    projected: tuple[str, ...]

    @property
    def key_schema(self) -> list[dict[str, str]]:
        return [
            {"AttributeName": self.hash_key, "KeyType": "HASH"},
            {"AttributeName": self.range_key, "KeyType": "RANGE"},
        ]

    def create_params(self) -> dict[str, Any]:
        """The index as CreateTable's GlobalSecondaryIndexes (and UpdateTable's Create) take it."""
        return {
            "IndexName": self.name,
            "KeySchema": self.key_schema,
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(self.projected)},
        }


@dataclass(frozen=True)
class TableSpec:
    """One table: what it is for, its name and its key (string attributes)."""

    role: str
    name: str
    hash_key: str
    range_key: str | None = None
    indexes: tuple[IndexSpec, ...] = ()

    @property
    def key_schema(self) -> list[dict[str, str]]:
        keys = [{"AttributeName": self.hash_key, "KeyType": "HASH"}]
        if self.range_key:
            keys.append({"AttributeName": self.range_key, "KeyType": "RANGE"})
        return keys

    def create_params(self, tags: list[dict[str, str]]) -> dict[str, Any]:
        """CreateTable parameters."""
        params: dict[str, Any] = {
            "TableName": self.name,
            "KeySchema": self.key_schema,
            "AttributeDefinitions": self.attribute_definitions(*self.indexes),
            "BillingMode": BILLING_MODE,
            "Tags": tags,
        }
        if self.indexes:
            params["GlobalSecondaryIndexes"] = [index.create_params() for index in self.indexes]
        return params

    def attribute_definitions(self, *indexes: IndexSpec) -> list[dict[str, str]]:
        """The key attributes of the table and of `indexes`, each once (all strings)."""
        names = [key["AttributeName"] for key in self.key_schema]
        for index in indexes:
            names += [key["AttributeName"] for key in index.key_schema]
        return [{"AttributeName": name, "AttributeType": "S"} for name in dict.fromkeys(names)]

    def missing_indexes(self, described: dict[str, Any]) -> list[IndexSpec]:
        """The indexes the table lacks (DescribeTable lists the ones it has, any status)."""
        have = {index["IndexName"] for index in described.get("GlobalSecondaryIndexes") or []}
        return [index for index in self.indexes if index.name not in have]

    def key_mismatch(self, described: dict[str, Any]) -> str | None:
        """Why an existing table cannot serve as this one (keys cannot change in place)."""
        have = [(k["AttributeName"], k["KeyType"]) for k in described.get("KeySchema", [])]
        want = [(k["AttributeName"], k["KeyType"]) for k in self.key_schema]
        if have != want:
            return (
                f"DynamoDB table {self.name} exists with key {_show_keys(have)}, "
                f"not {_show_keys(want)}: rename or delete it (keys cannot change in place)"
            )
        return None


def _show_keys(keys: list[tuple[str, str]]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in keys) or "none"


RUNS_BY_WORKFLOW: Final = IndexSpec(
    RUNS_BY_WORKFLOW_INDEX,
    WorkflowAudit.WORKFLOW_ID,
    WorkflowAudit.EXECUTION_START_TS,
    RUNS_BY_WORKFLOW_ATTRIBUTES,
)


def job_audit_spec(table_name: str) -> TableSpec:
    """The job audit table (the agents write it; tests and the bench make their own)."""
    return TableSpec("job audit", table_name, JobAudit.JOB_NAME, JobAudit.WORKFLOW_EXECUTION_ID)


def table_specs(names: StackNames) -> list[TableSpec]:
    """The stack's tables, in creation order."""
    return [
        TableSpec("config", names.config_table, Config.WORKFLOW_ID),
        job_audit_spec(names.job_audit_table),
        TableSpec(
            "workflow audit",
            names.workflow_audit_table,
            WorkflowAudit.WORKFLOW_EXECUTION_ID,
            WorkflowAudit.WORKFLOW_ID,
            indexes=(RUNS_BY_WORKFLOW,),
        ),
    ]


def billing_mode(described: dict[str, Any]) -> str:
    # DescribeTable leaves BillingModeSummary out for tables that were always provisioned.
    summary = described.get("BillingModeSummary") or {}
    return str(summary.get("BillingMode") or "PROVISIONED")
