"""One PostgreSQL connection that runs statements the way RSQL sends them: autocommit, so a
script's own `BEGIN` ... `COMMIT` are what make transactions, and one statement at a time.

psycopg 3 (the `psycopg[binary]` wheel, with libpq inside) is the driver: it reports each
error's SQLSTATE and message separately, each statement's row count and command tag, and reads
libpq's own settings (`PGPASSFILE`, `PGSSLMODE`, ...) as psql does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

import psycopg

from .interpreter import Result


class ConnectError(Exception):
    """The database did not accept the connection; the message says why, never a password."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str
    dbname: str
    password: str | None


class PgSession:
    """Statements in, Results out; errors become Results (a script goes on after them)."""

    def __init__(self, target: Target, notices: TextIO = sys.stderr) -> None:
        params: dict[str, Any] = {
            "host": target.host,
            "port": target.port,
            "user": target.user,
            "dbname": target.dbname,
            "connect_timeout": 10,
            "application_name": "rsql (local)",
        }
        if target.password is not None:
            params["password"] = target.password
        try:
            self._conn = psycopg.connect(autocommit=True, **params)
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "refused"
            raise ConnectError(
                f"cannot connect to {target.host}:{target.port} as {target.user} "
                f"(database {target.dbname}): {reason}"
            ) from None

        def show(diag: psycopg.errors.Diagnostic) -> None:
            notices.write(f"{diag.severity}:  {diag.message_primary}\n")

        self._conn.add_notice_handler(show)

    def execute(self, sql: str) -> Result:
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(sql.encode())
                return _result(cursor)
        except psycopg.Error as exc:
            message = exc.diag.message_primary or str(exc).strip()
            return Result(sqlstate=exc.sqlstate or "XX000", message=message)

    def close(self) -> None:
        # An open transaction ends as it would when RSQL disconnects: rolled back.
        self._conn.close()


def _result(cursor: psycopg.Cursor[Any]) -> Result:
    status = cursor.statusmessage or ""
    if cursor.description is None:
        return Result(status=status, rowcount=max(cursor.rowcount, 0))
    rows = cursor.fetchall()
    columns = [column.name for column in cursor.description]
    return Result(status=status, rowcount=len(rows), columns=columns, rows=rows)
