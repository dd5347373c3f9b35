"""The emulator's env file: every setting `rsql-cloud` and `rsql-agent run` need, as KEY=VALUE
lines that `set -a; . FILE; set +a` reads."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path
from typing import Final

from cloud.emulator.postgres import Connection
from cloud.names import DEFAULT_SECRET_ID, STACK_NAME_ENV, StackNames

HOST: Final = "127.0.0.1"
REGION: Final = "us-east-1"
ACCOUNT_ID: Final = "123456789012"
INSTANCE_ID: Final = "i-0emulator0000001"
# The env file names the emulator that wrote it, so a reader can tell a fresh file from a stale
# one left by an earlier run.
PID_KEY: Final = "RSQL_EMULATOR_PID"
# Keys passed to every boto3 client the emulator makes: never the EC2 metadata service.
CLIENT_ENV: Final = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}


def env_file_values(
    *,
    names: StackNames,
    moto_port: int,
    data_dir: Path,
    script_dir: Path | None,
    database: Connection,
    psql: Path,
    pgpass: Path,
    rsql: Path | None = None,
) -> dict[str, str]:
    """Every setting `rsql-cloud`, `rsql-agent run` and `psql` need to use the emulator; the
    database password stays out of them (`pgpass` holds it, for libpq; the secret, for the
    agent)."""
    values = {
        "AWS_ENDPOINT_URL": f"http://{HOST}:{moto_port}",
        **CLIENT_ENV,
        "MOTO_PORT": str(moto_port),
        STACK_NAME_ENV: names.stack_name,
        # The activity itself is created by `rsql-cloud deploy`.
        "RSQL_AGENT_ACTIVITY_ARN": (
            f"arn:aws:states:{REGION}:{ACCOUNT_ID}:activity:{names.activity}"
        ),
        "RSQL_AGENT_SECRET_ID": DEFAULT_SECRET_ID,
        "RSQL_AGENT_INSTANCE_ID": INSTANCE_ID,
        "RSQL_AGENT_LOG_DIR": str(data_dir / "logs"),
        "RSQL_AGENT_STATE_DIR": str(data_dir / "state"),
        "RSQL_AGENT_LOG_GROUP": names.log_group,
        "RSQL_AGENT_JOB_AUDIT_TABLE": names.job_audit_table,
        "PGHOST": database.host,
        "PGPORT": str(database.port),
        "PGUSER": database.user,
        "PGDATABASE": database.database,
        "PGPASSFILE": str(pgpass),
        # The sample scripts call ${RSQL_BIN:-rsql}: psql stands in for rsql here.
        "RSQL_BIN": str(psql),
    }
    if script_dir is not None:
        values["RSQL_AGENT_SCRIPT_DIR"] = str(script_dir)
    if rsql is not None:
        # The local rsql first on PATH: scripts call plain `rsql`, as on a host; `.sql` jobs
        # run it through the agent's setting.
        values["PATH"] = f"{rsql.parent}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
        values["RSQL_AGENT_RSQL_BIN"] = str(rsql)
    return values


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """KEY=VALUE lines, shell-quoted where needed, mode 0600, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a file `write_env_file` wrote (or any simple KEY=VALUE file)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        parts = shlex.split(raw)
        values[key.strip()] = parts[0] if parts else ""
    return values
