"""The local emulator: moto with Step Functions execution and the activity bridge, plus an
embedded PostgreSQL standing in for Redshift, in one process.

`run_emulator()` starts both, creates the Secrets Manager secret `rsql/redshift` that points at
the database, writes an env file (`set -a; . FILE` is all `rsql-cloud` and `rsql-agent run`
need), and runs until SIGINT or SIGTERM. `EmulatorProcess` runs it as a child process for the
tests and the demo. Everything listens on 127.0.0.1 only.

Heavy imports (moto, boto3) happen inside functions: `EmulatorProcess` users and
`rsql-cloud --help` do not pay for them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

from cloud.names import DEFAULT_SECRET_ID, StackNames

HOST: Final = "127.0.0.1"
REGION: Final = "us-east-1"
ACCOUNT_ID: Final = "123456789012"
INSTANCE_ID: Final = "i-0emulator0000001"
DEFAULT_PORT: Final = 5000
# The env file names the emulator that wrote it, so a reader can tell a fresh file from a stale
# one left by an earlier run.
PID_KEY: Final = "RSQL_EMULATOR_PID"
_REPO_SCRIPT_DIR: Final = Path(__file__).resolve().parent.parent / "rsql_scripts"
# Keys passed to every boto3 client the emulator makes: never the EC2 metadata service.
_CLIENT_ENV: Final = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}


class EmulatorError(RuntimeError):
    """The emulator could not start."""


def env_file_values(
    *,
    endpoint_url: str,
    moto_port: int,
    data_dir: Path,
    script_dir: Path | None,
    pg_port: int,
    pg_user: str,
    pg_database: str,
    psql: Path,
) -> dict[str, str]:
    """Every setting `rsql-cloud` and `rsql-agent run` need to use the emulator."""
    names = StackNames()
    values = {
        "AWS_ENDPOINT_URL": endpoint_url,
        **_CLIENT_ENV,
        "MOTO_PORT": str(moto_port),
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
        "PGHOST": HOST,
        "PGPORT": str(pg_port),
        "PGUSER": pg_user,
        "PGDATABASE": pg_database,
        # The sample scripts call ${RSQL_BIN:-rsql}: psql stands in for rsql here.
        "RSQL_BIN": str(psql),
    }
    if script_dir is not None:
        values["RSQL_AGENT_SCRIPT_DIR"] = str(script_dir)
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


class Emulator:
    """The emulator's parts, started and stopped in order; no signal handling (see
    `run_emulator`), so it can be embedded."""

    def __init__(self, port: int, data_dir: Path, env_file: Path, script_dir: Path | None) -> None:
        self.data_dir = data_dir.absolute()
        self.env_file = env_file.absolute()
        self.script_dir = script_dir
        self.requested_port = port
        self.port = 0
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._hub: Any = None
        self._gate: _WarmUpGate | None = None
        self._pg: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> dict[str, str]:
        """Start moto and Postgres, create the secret, write the env file; return its values."""
        for sub in ("logs", "state"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        os.environ.update(_CLIENT_ENV)
        self._start_moto()
        from cloud.embedded_pg import EmbeddedPostgres

        self._pg = EmbeddedPostgres(self.data_dir / "postgres")
        connection = self._pg.start()
        self._create_secret(connection)
        values = env_file_values(
            endpoint_url=self.endpoint_url,
            moto_port=self.port,
            data_dir=self.data_dir,
            script_dir=self.script_dir,
            pg_port=connection.port,
            pg_user=connection.user,
            pg_database=connection.database,
            psql=self._pg.psql,
        )
        values[PID_KEY] = str(os.getpid())
        write_env_file(self.env_file, values)
        self.wait_ready()
        return values

    def stop(self) -> None:
        """Stop Postgres and the server, each bounded."""
        if self._hub is not None:
            self._hub.stop()  # open long polls answer at once
        if self._pg is not None:
            self._pg.stop(timeout_s=10)
            self._pg = None
        if self._server is not None:
            self._server.shutdown()  # returns within serve_forever's poll interval
            self._server.server_close()
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)

    def _start_moto(self) -> None:
        import logging

        from moto.core.config import default_user_config
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        # One line per request is noise for a long-running emulator.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        default_user_config["stepfunctions"]["execute_state_machine"] = True
        # What the secret creation below needs, imported before the warm-up thread starts so
        # the two never import the same modules at once.
        import moto.secretsmanager.urls  # noqa: F401

        self._gate = _WarmUpGate(DomainDispatcherApplication(create_backend_app))
        # Bound here, not in a thread (ThreadedMotoServer waits forever when the bind fails);
        # port 0 lets the kernel pick a free port, with no window for another process to take it.
        server: Any = make_server(
            HOST,
            self.requested_port,
            self._gate,
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        # Requests run in daemon threads that shutdown does not wait for (a long poll would
        # hold it up to 60 s).
        server.block_on_close = False
        self.port = int(server.server_port)
        # The interpreter's own service calls (DynamoDB, SNS) read MOTO_PORT for every call:
        # set before the first request is served.
        os.environ["MOTO_PORT"] = str(self.port)
        self._server = server
        self._server_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long shutdown() may wait
            name="moto-server",
            daemon=True,
        )
        self._server_thread.start()
        self._gate.start_warm_up()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait for the bridge to be in place (see `_WarmUpGate`); raise if it failed."""
        if self._gate is None:
            raise EmulatorError("the server is not started")
        self._hub = self._gate.wait(timeout_s)

    def _create_secret(self, connection: Any) -> None:
        import boto3

        client = boto3.client(
            "secretsmanager",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - the emulator's fake credentials
        )
        client.create_secret(
            Name=DEFAULT_SECRET_ID,
            Description="Connection to the emulator's embedded PostgreSQL (stands in for Redshift)",
            SecretString=json.dumps(
                {
                    "username": connection.user,
                    "password": connection.password,
                    "host": connection.host,
                    "port": connection.port,
                    "dbname": connection.database,
                    "engine": "redshift",
                }
            ),
        )


class _WarmUpGate:
    """WSGI wrapper that holds requests until the activity bridge is applied.

    Applying it imports moto's interpreter, which imports moto.ec2 (about 1.5 s, mostly
    botocore region data). It runs in a thread while Postgres starts and the env file is
    written, so the emulator is ready sooner; requests other than Secrets Manager's (the
    emulator's own secret) wait for it, so none reaches an unpatched moto.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._done = threading.Event()
        self._hub: Any = None
        self._error: BaseException | None = None

    def start_warm_up(self) -> None:
        threading.Thread(target=self._warm_up, name="bridge-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            from cloud import bridge

            self._hub = bridge.apply()
        except BaseException as exc:  # reported by wait() and to every held request
            self._error = exc
        finally:
            self._done.set()

    def wait(self, timeout_s: float) -> Any:
        if not self._done.wait(timeout_s):
            raise EmulatorError(f"the activity bridge was not applied within {timeout_s:.0f} s")
        if self._error is not None:
            raise EmulatorError(f"the activity bridge failed: {self._error}") from self._error
        return self._hub

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if not target.startswith("secretsmanager.") and not self._done.is_set():
            self._done.wait(120)
        if self._error is not None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"rsql emulator: the activity bridge failed: {self._error}".encode()]
        return self._app(environ, start_response)


def run_emulator(port: int, data_dir: Path, env_file: Path, script_dir: Path | None) -> int:
    """Run the emulator until SIGINT or SIGTERM; a second signal stops it without waiting."""
    if script_dir is None and _REPO_SCRIPT_DIR.is_dir():
        script_dir = _REPO_SCRIPT_DIR
    if script_dir is not None:
        script_dir = script_dir.absolute()
    stop_requested = threading.Event()
    emulator = Emulator(port, data_dir, env_file, script_dir)
    with _stop_signals(stop_requested):
        try:
            values = emulator.start()
            print(
                f"rsql emulator: AWS endpoint {values['AWS_ENDPOINT_URL']}, PostgreSQL "
                f"{values['PGHOST']}:{values['PGPORT']} (database {values['PGDATABASE']}, "
                f"password in secret {DEFAULT_SECRET_ID})",
                flush=True,
            )
            print(f"rsql emulator: env file {emulator.env_file}", flush=True)
            print(f"rsql emulator: use it with: set -a; . {emulator.env_file}; set +a", flush=True)
            # Short waits: a signal the kernel delivers to another thread does not interrupt a
            # long wait in this one, and Python runs handlers only in the main thread.
            while not stop_requested.wait(0.2):
                pass
            print("rsql emulator: stopping", flush=True)
        except Exception as exc:  # the message is the point; the traceback goes to stderr too
            print(f"rsql emulator: failed: {exc}", file=sys.stderr, flush=True)
            raise
        finally:
            emulator.stop()
    return 0


@contextmanager
def _stop_signals(event: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `event`; a second one raises KeyboardInterrupt (stop now)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The emulator's options; `rsql-cloud emulator` adds them to its own sub-parser."""
    parser = parser or argparse.ArgumentParser(
        # `rsql-cloud emulator` hands its arguments to main().
        prog="rsql-cloud emulator"
        if Path(sys.argv[0]).name == "rsql-cloud"
        else "python -m cloud.emulator",
        description="Run the local emulator (moto with the activity bridge, and PostgreSQL "
        "standing in for Redshift) until SIGINT or SIGTERM; write an env file for "
        "`set -a; . FILE`.",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="AWS endpoint port (0: any free port)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".rsql-emulator"),
        help="logs, agent state and the database live here (default: .rsql-emulator)",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="where to write the settings (default: DATA_DIR/env)",
    )
    parser.add_argument(
        "--script-dir",
        type=Path,
        default=None,
        help="RSQL_AGENT_SCRIPT_DIR to write (default: the repository's rsql_scripts)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env_file = args.env_file if args.env_file is not None else args.data_dir / "env"
    try:
        return run_emulator(args.port, args.data_dir, env_file, args.script_dir)
    except KeyboardInterrupt:
        return 130


class EmulatorProcess:
    """The emulator as a child process in its own process group, for tests and the demo.

    >>> with EmulatorProcess(tmp_path) as emu:
    ...     boto3.client("stepfunctions", endpoint_url=emu.endpoint_url, ...)

    `env` holds the env file's values once `start()` returns.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        env_file: Path | None = None,
        script_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.env_file = (env_file or self.data_dir / "env").absolute()
        self.port = port
        self.script_dir = script_dir
        self.extra_env = extra_env or {}
        self.start_timeout_s = start_timeout_s
        self.env: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return self.env["AWS_ENDPOINT_URL"]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def stderr_path(self) -> Path:
        return self.data_dir / "emulator.stderr"

    def start(self) -> EmulatorProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "cloud.emulator",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--env-file",
            str(self.env_file),
        ]
        if self.script_dir is not None:
            argv += ["--script-dir", str(self.script_dir)]
        # Output to files, not pipes: a pipe nobody reads fills up and blocks the emulator.
        self._stdout = open(self.data_dir / "emulator.stdout", "ab")  # noqa: SIM115
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            env={**os.environ, **_CLIENT_ENV, **self.extra_env},
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,
        )
        try:
            self.env = self._wait_for_env_file()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_env_file(self) -> dict[str, str]:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.env_file.is_file():
                values = read_env_file(self.env_file)
                if values.get(PID_KEY) == str(self._proc.pid):
                    return values
            code = self._proc.poll()
            if code is not None:
                raise EmulatorError(
                    f"the emulator exited with code {code} before it was ready; "
                    f"stderr:\n{self._stderr_tail()}"
                )
            if time.monotonic() > deadline:
                raise EmulatorError(
                    f"the emulator was not ready after {self.start_timeout_s:.0f} s; "
                    f"stderr:\n{self._stderr_tail()}"
                )
            time.sleep(0.05)

    def wait(self, timeout_s: float) -> int:
        """Wait for the emulator to exit by itself; its exit code (raises on timeout)."""
        if self._proc is None:
            raise EmulatorError("the emulator is not running")
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise EmulatorError(f"the emulator did not exit within {timeout_s:.0f} s") from exc

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL the whole process group."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            # Anything the emulator left in its group (Postgres after a SIGKILL) goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if code is None:
                code = proc.wait(5)
        for handle in (self._stdout, self._stderr):
            if handle is not None:
                handle.close()
        self._stdout = self._stderr = None
        return code

    def _stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
