"""The local emulator (cloud/emulator/): its env file, the secret, the
embedded PostgreSQL over TCP with the secret's password, and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import AwsClients

from cloud.cli import main as cloud_main
from cloud.emulator import EmulatorError
from cloud.emulator.envfile import read_env_file, write_env_file
from cloud.emulator.process import EmulatorProcess

REPO = Path(__file__).resolve().parent.parent
EXPECTED_KEYS = {
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_EC2_METADATA_DISABLED",
    "MOTO_PORT",
    "RSQL_STACK_NAME",
    "RSQL_AGENT_ACTIVITY_ARN",
    "RSQL_AGENT_SECRET_ID",
    "RSQL_AGENT_INSTANCE_ID",
    "RSQL_AGENT_SCRIPT_DIR",
    "RSQL_AGENT_LOG_DIR",
    "RSQL_AGENT_STATE_DIR",
    "RSQL_AGENT_LOG_GROUP",
    "RSQL_AGENT_JOB_AUDIT_TABLE",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSFILE",
    "RSQL_BIN",
    "RSQL_EMULATOR_PID",
    # The local rsql: its directory first on PATH, and the agent's client for .sql jobs.
    "PATH",
    "RSQL_AGENT_RSQL_BIN",
}


def postgres_pids(data_dir: Path) -> list[int]:
    """Postmasters whose cluster lives under `data_dir`."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(str(data_dir) in arg for arg in cmdline):
            found.append(proc.info["pid"])
    return found


def wait_gone(pids: list[int], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(psutil.pid_exists(pid) and not _zombie(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {pids}"
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_psql(
    env_file_values: dict[str, str], password: str, sql: str
) -> subprocess.CompletedProcess[str]:
    """The emulator's psql over TCP, connection settings from the env file."""
    env = {**os.environ, **env_file_values, "PGPASSWORD": password}
    return subprocess.run(
        [env_file_values["RSQL_BIN"], "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_env_file_has_every_setting_and_is_private(emulator: EmulatorProcess) -> None:
    env = read_env_file(emulator.env_file)
    assert set(env) == EXPECTED_KEYS
    assert stat.S_IMODE(emulator.env_file.stat().st_mode) == 0o600
    port = int(env["MOTO_PORT"])
    assert env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["RSQL_STACK_NAME"] == "rsql"
    assert env["RSQL_AGENT_ACTIVITY_ARN"] == (
        "arn:aws:states:us-east-1:123456789012:activity:rsql-jobs"
    )
    assert env["RSQL_AGENT_SECRET_ID"] == "rsql/redshift"
    assert env["RSQL_AGENT_INSTANCE_ID"] == "i-0emulator0000001"
    assert env["RSQL_AGENT_SCRIPT_DIR"] == str(REPO / "rsql_scripts")
    assert env["RSQL_AGENT_LOG_DIR"] == str(emulator.data_dir / "logs")
    assert env["RSQL_AGENT_STATE_DIR"] == str(emulator.data_dir / "state")
    assert Path(env["RSQL_AGENT_LOG_DIR"]).is_dir() and Path(env["RSQL_AGENT_STATE_DIR"]).is_dir()
    assert env["RSQL_AGENT_LOG_GROUP"] == "/rsql/jobs"
    assert env["RSQL_AGENT_JOB_AUDIT_TABLE"] == "rsql-job-audit"
    assert (env["PGHOST"], env["PGUSER"], env["PGDATABASE"]) == ("127.0.0.1", "awsuser", "dev")
    assert Path(env["RSQL_BIN"]).name == "psql" and os.access(env["RSQL_BIN"], os.X_OK)
    assert env["RSQL_EMULATOR_PID"] == str(emulator.pid)
    rsql = emulator.data_dir / "bin" / "rsql"
    assert env["RSQL_AGENT_RSQL_BIN"] == str(rsql) and os.access(rsql, os.X_OK)
    assert env["PATH"].split(":")[0] == str(rsql.parent)
    # The agent takes the password from the secret, psql from the password file: never from
    # this file.
    assert "PGPASSWORD" not in emulator.env_file.read_text()
    password = (emulator.data_dir / "postgres" / "password").read_text().strip()
    assert password not in emulator.env_file.read_text()
    pgpass = Path(env["PGPASSFILE"])
    assert pgpass == emulator.data_dir / "pgpass"
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600


def test_after_sourcing_the_env_file_psql_connects(emulator: EmulatorProcess) -> None:
    """The env file is enough: the wheel's psql, no password in the environment."""
    sourced = subprocess.run(
        [
            "bash",
            "-c",
            f"set -a; . {emulator.env_file}; set +a; "
            '"$RSQL_BIN" -X -tA -c "select current_user, current_database()"',
        ],
        env={"PATH": os.environ["PATH"], "HOME": str(emulator.data_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert sourced.returncode == 0, sourced.stderr
    assert sourced.stdout.strip() == "awsuser|dev"


def test_env_file_is_what_bash_set_a_reads(emulator: EmulatorProcess) -> None:
    shown = subprocess.run(
        ["bash", "-c", f"set -a; . {emulator.env_file}; env -0"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout.decode()
    exported = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
    assert {key: exported.get(key) for key in EXPECTED_KEYS} == read_env_file(emulator.env_file)


def test_env_file_values_are_quoted_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sub dir" / "env"
    values = {"A": "plain", "B": "two words", "C": "it's $HOME `x`", "D": ""}
    write_env_file(path, values)
    write_env_file(path, {**values, "A": "second"})
    assert read_env_file(path) == {**values, "A": "second"}
    assert [p.name for p in path.parent.iterdir()] == ["env"]  # no temp file left
    shown = subprocess.run(
        ["bash", "-c", f'set -a; . \'{path}\'; printf \'%s|%s|%s\' "$A" "$B" "$C"'],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    assert shown == "second|two words|it's $HOME `x`"


def test_secret_points_at_the_embedded_database(emulator: EmulatorProcess, aws: AwsClients) -> None:
    secret = json.loads(aws.secrets.get_secret_value(SecretId="rsql/redshift")["SecretString"])
    assert set(secret) == {"username", "password", "host", "port", "dbname", "engine"}
    env = emulator.env
    assert (secret["host"], secret["port"]) == (env["PGHOST"], int(env["PGPORT"]))
    assert (secret["username"], secret["dbname"]) == (env["PGUSER"], env["PGDATABASE"])
    assert len(secret["password"]) >= 20


def test_postgres_over_tcp_with_the_secrets_password(
    emulator: EmulatorProcess, aws: AwsClients
) -> None:
    secret = json.loads(aws.secrets.get_secret_value(SecretId="rsql/redshift")["SecretString"])
    result = run_psql(
        emulator.env,
        secret["password"],
        "SELECT current_user, current_database(), inet_server_addr()",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "awsuser|dev|127.0.0.1"

    # Password authentication is enforced, as on Redshift.
    wrong = run_psql(emulator.env, "not-the-password", "SELECT 1")
    assert wrong.returncode != 0
    assert "password authentication failed" in wrong.stderr


def test_sigterm_stops_the_emulator_and_its_postgres(emulator_data_dir: Path) -> None:
    emu = EmulatorProcess(emulator_data_dir).start()
    try:
        pids = postgres_pids(emu.data_dir)
        assert len(pids) == 1
        moto_port, pg_port = int(emu.env["MOTO_PORT"]), int(emu.env["PGPORT"])
        assert port_open(moto_port) and port_open(pg_port)
        assert emu.pid is not None
        os.kill(emu.pid, signal.SIGTERM)
        code = emu.wait(timeout_s=15)
    finally:
        emu.stop()
    assert code == 0
    wait_gone(pids)
    assert postgres_pids(emu.data_dir) == []
    assert not port_open(moto_port) and not port_open(pg_port)
    assert "stopping" in (emu.data_dir / "emulator.stdout").read_text()


def test_a_postmaster_left_by_a_killed_emulator_is_stopped_at_the_next_start(
    emulator_data_dir: Path,
) -> None:
    data_dir = emulator_data_dir
    first = EmulatorProcess(data_dir).start()
    second = None
    try:
        orphan = postgres_pids(data_dir)
        assert len(orphan) == 1 and first.pid is not None
        # Kill the emulator alone, as an OOM kill would: its Postgres lives on.
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout_s=10) == -signal.SIGKILL
        assert psutil.pid_exists(orphan[0])

        second = EmulatorProcess(data_dir).start()
        wait_gone(orphan, timeout_s=1)  # stopped before the new server started
        password = (data_dir / "postgres" / "password").read_text().strip()
        result = run_psql(second.env, password, "SELECT 1")
        assert result.returncode == 0, result.stderr
        current = postgres_pids(data_dir)
        assert len(current) == 1 and current != orphan
    finally:
        if second is not None:
            second.stop()
        first.stop()  # after the second start: its group kill would take the orphan too
    wait_gone(current)


def test_a_failed_start_reports_the_emulators_stderr(emulator_data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        emu = EmulatorProcess(emulator_data_dir, port=port, start_timeout_s=30)
        started = time.monotonic()
        with pytest.raises(EmulatorError, match="Address already in use"):
            emu.start()
    assert time.monotonic() - started < 20
    assert emu.pid is None  # stopped after the failure


def test_stack_name_names_that_stacks_resources_in_the_env_file(
    emulator_data_dir: Path, uid: str
) -> None:
    """`--stack-name` (here from $RSQL_STACK_NAME, as every command takes it): after sourcing
    the env file, `rsql-cloud deploy` makes the very resources the agent settings name."""
    stack = f"emu-{uid}"
    with EmulatorProcess(emulator_data_dir, extra_env={"RSQL_STACK_NAME": stack}) as emu:
        assert emu.env["RSQL_STACK_NAME"] == stack
        deployed = subprocess.run(
            [
                "bash",
                "-c",
                f'set -a; . {emu.env_file}; set +a; "$0" -m cloud deploy --json',
                sys.executable,
            ],
            env={
                "PATH": os.environ["PATH"],
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert deployed.returncode == 0, deployed.stderr
    outputs = json.loads(deployed.stdout)
    assert outputs["stack_name"] == stack
    assert emu.env["RSQL_AGENT_ACTIVITY_ARN"] == outputs["activity_arn"]
    assert emu.env["RSQL_AGENT_ACTIVITY_ARN"].endswith(f":activity:{stack}-jobs")
    assert emu.env["RSQL_AGENT_LOG_GROUP"] == outputs["log_group"] == f"/{stack}/jobs"
    assert emu.env["RSQL_AGENT_JOB_AUDIT_TABLE"] == outputs["job_audit_table"]
    assert outputs["job_audit_table"] == f"{stack}-job-audit"


def test_a_bad_stack_name_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cloud", "emulator", "--stack-name", "no_underscores"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid stack name 'no_underscores'" in done.stderr


@pytest.mark.parametrize("command", ["emulator", "demo"])
def test_help_of_emulator_and_demo_ends_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cloud_main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rsql-cloud {command}")
    assert "[emulator] extra" in out
    assert f"example:\n  rsql-cloud {command} " in out
