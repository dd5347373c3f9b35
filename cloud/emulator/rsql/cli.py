"""`rsql`: the RSQL client's command line, run locally against the emulator's PostgreSQL.

Connection settings come from the options, else from the environment the agent gives every job
(`RSQL_HOST`, `RSQL_PORT`, `RSQL_USER`, `RSQL_DB`), else from libpq's (`PGHOST`, `PGPORT`, ...).
The password comes from `RSPASSWORD`, as the real client takes it, else `PGPASSWORD`, else
libpq's password file. The AWS sample's scripts give only `-h -U -d`: the real client takes the
port from its DSN, this one from the environment.

Exit codes: the script's `\\exit N`; 0 at the end of the script; 1 bad usage or an unreadable
file; 2 no connection; 3 the script stopped on an error (a construct the local rsql cannot run,
or a failed statement with `ON_ERROR_STOP` set).
"""

from __future__ import annotations

import argparse
import getpass
import io
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from .interpreter import EXIT_SCRIPT_ERROR, Interpreter
from .script import ScriptError, split_script
from .session import ConnectError, PgSession, Target

EXIT_USAGE: Final = 1
EXIT_CONNECTION: Final = 2
DEFAULT_PORT: Final = 5439  # Redshift's, as the real client assumes
EXAMPLE: Final = """example:
  rsql -h "$RSQL_HOST" -U "$RSQL_USER" -d "$RSQL_DB" <<'EOF'
  CREATE TABLE t (id integer ENCODE az64) DISTKEY(id);
  \\if :ERROR <> 0
    \\remark :LAST_ERROR_MESSAGE
    \\exit 21
  \\endif
  EOF
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsql",
        add_help=False,  # -h is the host, as in the real client
        description="Run an Amazon Redshift RSQL script against the local emulator's "
        "PostgreSQL: RSQL's meta-commands and variables, Redshift SQL translated where the "
        "meaning is kept (see docs/rsql-local.md).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-h", "--host", help="database host (default: $RSQL_HOST, $PGHOST)")
    parser.add_argument("-p", "--port", type=int, help="port (default: $RSQL_PORT, $PGPORT)")
    parser.add_argument("-U", "--username", help="user (default: $RSQL_USER, $PGUSER)")
    parser.add_argument("-d", "--dbname", help="database (default: $RSQL_DB, $PGDATABASE)")
    parser.add_argument("-f", "--file", help="run this script (default: standard input)")
    parser.add_argument(
        "-v",
        "--set",
        "--variable",
        dest="variables",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a variable before the script runs (e.g. ON_ERROR_STOP=1)",
    )
    parser.add_argument("-D", "--dsn", help=argparse.SUPPRESS)
    parser.add_argument("positional", nargs="*", help=argparse.SUPPRESS)
    return parser


def _pick(*values: str | None) -> str | None:
    return next((value for value in values if value), None)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the script; return the exit code."""
    environ = os.environ if env is None else env
    args = _parser().parse_args(argv)
    if args.dsn:
        print("rsql: -D (an ODBC DSN) is not supported locally: use -h -U -d", file=sys.stderr)
        return EXIT_USAGE
    variables: dict[str, str] = {}
    for pair in args.variables:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            print(f"rsql: -v needs NAME=VALUE, got {pair!r}", file=sys.stderr)
            return EXIT_USAGE
        variables[name] = value
    try:
        text, source = _read_script(args.file)
    except OSError as exc:
        print(f"rsql: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return run(text, source, _target(args, environ), variables)


def run(text: str, source: str, target: Target, variables: dict[str, str]) -> int:
    """Split the script, connect, run it."""
    # Line by line, so the agent streams a long script's progress as it happens.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        items = split_script(text)
    except ScriptError as exc:
        print(f"rsql:{source}:{exc.line}: {exc.message}", file=sys.stderr)
        return EXIT_SCRIPT_ERROR
    try:
        session = PgSession(target)
    except ConnectError as exc:
        print(f"rsql: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    try:
        interpreter = Interpreter(
            items, session, out=sys.stdout, err=sys.stderr, source=source, variables=variables
        )
        return interpreter.run()
    finally:
        sys.stdout.flush()
        session.close()


def _read_script(path: str | None) -> tuple[str, str]:
    if path is None or path == "-":
        return sys.stdin.read(), "stdin"
    return Path(path).read_text(encoding="utf-8"), path


def _target(args: argparse.Namespace, env: Mapping[str, str]) -> Target:
    positional = list(args.positional)
    dbname = _pick(args.dbname, positional[0] if positional else None)
    user = _pick(args.username, positional[1] if len(positional) > 1 else None)
    port = args.port or int(_pick(env.get("RSQL_PORT"), env.get("PGPORT")) or DEFAULT_PORT)
    return Target(
        host=_pick(args.host, env.get("RSQL_HOST"), env.get("PGHOST")) or "localhost",
        port=port,
        user=_pick(user, env.get("RSQL_USER"), env.get("PGUSER")) or getpass.getuser(),
        dbname=_pick(dbname, env.get("RSQL_DB"), env.get("PGDATABASE")) or "dev",
        password=_pick(env.get("RSPASSWORD"), env.get("PGPASSWORD")),
    )


if __name__ == "__main__":
    sys.exit(main())
