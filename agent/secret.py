"""The Redshift connection, read once at start from Secrets Manager and handed to every script
as environment variables (RSQL's own names and libpq's, so `rsql` and `psql` both find it).

The password is registered with the log redactor the moment it is read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent import logs
from agent.aws import FOREVER, Aws, error_code

log = structlog.get_logger(__name__)


class SecretError(Exception):
    """The secret is missing, unreadable or lacks a connection field."""


class Connection(BaseModel):
    """The fields of a Redshift secret (Secrets Manager's Redshift template, plus dbname)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(default=5439, ge=1, le=65535)
    username: str = Field(min_length=1)
    password: str
    dbname: str = Field(default="dev", min_length=1)


# (RSQL name, libpq name) per field.
ENV_NAMES: Final = {
    "host": ("RSQL_HOST", "PGHOST"),
    "port": ("RSQL_PORT", "PGPORT"),
    "username": ("RSQL_USER", "PGUSER"),
    "dbname": ("RSQL_DB", "PGDATABASE"),
    "password": ("RSPASSWORD", "PGPASSWORD"),
}


def parse_secret(secret_string: str) -> Connection:
    """Validate the secret's JSON; errors name fields, never values."""
    try:
        data = json.loads(secret_string)
    except json.JSONDecodeError:
        raise SecretError("the secret is not JSON") from None
    if isinstance(data, dict) and "dbname" not in data and "database" in data:
        data["dbname"] = data["database"]
    try:
        return Connection.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "secret" for e in exc.errors())
        raise SecretError(f"the secret lacks or has bad connection fields: {fields}") from None


def connection_env(connection: Connection) -> dict[str, str]:
    """The environment variables a script gets for this connection."""
    values: Mapping[str, object] = connection.model_dump()
    env: dict[str, str] = {}
    for field, names in ENV_NAMES.items():
        for name in names:
            env[name] = str(values[field])
    return env


async def load_connection_env(aws: Aws, secret_id: str | None) -> dict[str, str]:
    """Fetch the secret once and return its environment variables ({} with no secret)."""
    if not secret_id:
        log.warning("no_secret_configured", detail="scripts get no connection settings")
        return {}
    try:
        # An outage at start is waited out (Outage says so once a minute), not a crash loop.
        response = await aws.call(
            aws.secretsmanager.get_secret_value, deadline_s=FOREVER, SecretId=secret_id
        )
    except Exception as exc:
        raise SecretError(f"cannot read secret {secret_id!r}: {error_code(exc)}") from None
    secret_string = response.get("SecretString")
    if not secret_string:
        raise SecretError(f"secret {secret_id!r} has no SecretString")
    connection = parse_secret(secret_string)
    logs.redactor.add(connection.password)
    return connection_env(connection)
