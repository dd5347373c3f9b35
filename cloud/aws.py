"""The AWS side of `rsql-cloud`: one boto3 session per command, clients made on first use.

Endpoint, region and credentials come from the standard AWS variables (`AWS_ENDPOINT_URL`,
`AWS_REGION`, ...), which botocore reads itself, so the same command runs against AWS or the
local emulator. Errors the operator can act on are `CloudError`s: the CLI prints them as one
line, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from agent.schema import iso_utc_ms

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_stepfunctions import SFNClient

# Standard retry mode backs off on throttling and 5xx; a CLI can afford a few seconds of it.
# Timeouts are short: every call the CLI makes answers at once (no long polls here).
CLIENT_CONFIG: Final = Config(
    retries={"max_attempts": 6, "mode": "standard"},
    connect_timeout=5,
    read_timeout=30,
    user_agent_extra="rsql-cloud",
)


class CloudError(Exception):
    """Something the operator can fix (a missing stack, a bad file, a running workflow).
    The message is one complete sentence, printed as it is."""


def error_code(exc: BaseException) -> str:
    """The service's error code of a ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "")
    return ""


def is_error(exc: BaseException, *codes: str) -> bool:
    return isinstance(exc, ClientError) and error_code(exc) in codes


@dataclass(frozen=True)
class Account:
    """Where the stack lives: enough to build every ARN without asking the services."""

    partition: str
    region: str
    account_id: str

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:{self.partition}:{service}:{region}:{self.account_id}:{resource}"


class Aws:
    """The clients of one command run. Tests pass a session to observe or redirect calls."""

    def __init__(self, session: boto3.session.Session | None = None) -> None:
        self.session = session or boto3.session.Session()
        if not self.session.region_name:
            raise CloudError("no AWS region configured: set AWS_REGION (e.g. us-east-1)")
        self.region: str = self.session.region_name
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        """The client of any service (the typed properties below cover the usual ones)."""
        return self._client(service)

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service,  # type: ignore[call-overload]
                config=CLIENT_CONFIG,
            )
        return self._clients[service]

    @property
    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self._client("dynamodb")
        return client

    @property
    def sfn(self) -> SFNClient:
        client: SFNClient = self._client("stepfunctions")
        return client

    @property
    def logs(self) -> CloudWatchLogsClient:
        client: CloudWatchLogsClient = self._client("logs")
        return client

    @property
    def sns(self) -> SNSClient:
        client: SNSClient = self._client("sns")
        return client

    @property
    def iam(self) -> IAMClient:
        client: IAMClient = self._client("iam")
        return client

    @functools.cached_property
    def account(self) -> Account:
        """Partition, region and account id (one STS call, made once)."""
        identity = self._client("sts").get_caller_identity()
        partition = self.session.get_partition_for_region(self.region)
        return Account(partition=partition, region=self.region, account_id=identity["Account"])


def iso_or_none(moment: Any) -> str | None:
    """A date of an AWS answer (boto3 gives datetimes) as our timestamps read; None if absent."""
    return iso_utc_ms(moment.timestamp()) if isinstance(moment, dt.datetime) else None
