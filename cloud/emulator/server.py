"""The emulator in one process: moto's server with the activity bridge, the embedded
PostgreSQL, and the secret `rsql/redshift` that points at it. Everything listens on 127.0.0.1.

Heavy imports (moto, boto3) happen inside functions, so that importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Final

from cloud.emulator import EmulatorError
from cloud.emulator.envfile import (
    CLIENT_ENV,
    HOST,
    PID_KEY,
    REGION,
    env_file_values,
    write_env_file,
)
from cloud.emulator.rsql import wrapper as rsql_wrapper
from cloud.names import DEFAULT_SECRET_ID, StackNames

DEFAULT_PORT: Final = 5000


class Emulator:
    """The emulator's parts, started and stopped in order; no signal handling (see
    `run_emulator`), so it can be embedded."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        env_file: Path,
        script_dir: Path | None,
        names: StackNames,
        fault_rate: float = 0.0,
        fault_seed: int | None = None,
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.names = names
        self.env_file = env_file.absolute()
        self.script_dir = script_dir
        self.requested_port = port
        self.fault_rate = fault_rate
        self.fault_seed = fault_seed
        self.port = 0
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._hub: Any = None
        self._gate: _WarmUpGate | None = None
        self._pg: Any = None
        self._scheduler: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> dict[str, str]:
        """Start moto and Postgres, create the secret, write the env file; return its values."""
        for sub in ("logs", "state"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        os.environ.update(CLIENT_ENV)
        self._start_moto()
        from cloud.emulator.postgres import EmbeddedPostgres

        self._pg = EmbeddedPostgres(self.data_dir / "postgres")
        connection = self._pg.start()
        self._create_secret(connection)
        pgpass = self.data_dir / "pgpass"
        self._pg.write_pgpass(pgpass)
        values = env_file_values(
            names=self.names,
            moto_port=self.port,
            data_dir=self.data_dir,
            script_dir=self.script_dir,
            database=connection,
            psql=self._pg.psql,
            pgpass=pgpass,
            rsql=rsql_wrapper.install(self.data_dir / "bin"),
        )
        values[PID_KEY] = str(os.getpid())
        write_env_file(self.env_file, values)
        self.wait_ready()
        from cloud.emulator.scheduler import ScheduleRunner

        # moto stores schedules; this runs them.
        self._scheduler = ScheduleRunner(self.endpoint_url, REGION)
        self._scheduler.start()
        return values

    def stop(self) -> None:
        """Stop the scheduler, Postgres and the server, each bounded."""
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
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
        app: Any = self._gate
        if self.fault_rate:
            from cloud.emulator.faults import FaultInjector

            app = FaultInjector(self._gate, self.fault_rate, self.fault_seed)
        # Bound here, not in a thread (ThreadedMotoServer waits forever when the bind fails);
        # port 0 lets the kernel pick a free port, with no window for another process to take it.
        server: Any = make_server(
            HOST,
            self.requested_port,
            app,
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
            from cloud.emulator import bridge

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
