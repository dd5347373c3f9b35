"""The local `rsql` from the emulator's env file, run as a process against its PostgreSQL:
RSQL's variables after each statement, branches, jumps, exit codes, and the refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import AwsClients

from cloud.emulator.process import EmulatorProcess


@pytest.fixture(scope="module")
def password(_aws_clients: AwsClients) -> str:
    secret = _aws_clients.secrets.get_secret_value(SecretId="rsql/redshift")
    return str(json.loads(secret["SecretString"])["password"])


@pytest.fixture
def schema(emulator: EmulatorProcess, password: str, uid: str) -> Iterator[str]:
    name = f"t_{uid.replace('-', '_')}"
    assert rsql(password, f"CREATE SCHEMA {name};").returncode == 0
    yield name
    rsql(password, f"DROP SCHEMA {name} CASCADE;")


def rsql(
    password: str, script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`rsql -h -U -d` as the AWS sample's scripts call it: the port from the environment."""
    environ = {**os.environ, "RSPASSWORD": password, **(env or {})}
    return subprocess.run(
        [
            "rsql",
            "-h",
            environ["PGHOST"],
            "-U",
            environ["PGUSER"],
            "-d",
            environ["PGDATABASE"],
            *args,
        ],
        input=script,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_env_file_puts_rsql_on_path(emulator: EmulatorProcess) -> None:
    found = shutil.which("rsql", path=emulator.env["PATH"])
    assert found == str(emulator.data_dir / "bin" / "rsql")
    assert emulator.env["RSQL_AGENT_RSQL_BIN"] == found


def test_variables_follow_each_statement_and_the_script_goes_on_after_an_error(
    password: str, schema: str
) -> None:
    result = rsql(
        password,
        f"""
        CREATE TABLE {schema}.t (id integer ENCODE az64 DISTKEY, name varchar(10) ENCODE lzo)
        SORTKEY (id);
        \\echo created :ERROR :ERRORCODE :ACTIVITYCOUNT
        INSERT INTO {schema}.t VALUES (1, 'a'), (2, NVL(NULL, 'b')), (3, 'c');
        \\echo inserted :ERROR :ERRORCODE :ACTIVITYCOUNT
        INSERT INTO {schema}.t VALUES ('not a number', 'x');
        \\echo failed :ERROR :ERRORCODE
        \\remark :LAST_ERROR_MESSAGE
        SELECT id, name FROM {schema}.t WHERE id > 1 ORDER BY id;
        \\echo selected :ERROR :ERRORCODE :ACTIVITYCOUNT
        \\remark 'still//failed:' :LAST_ERROR_MESSAGE
        """,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "created 0 00000 0" in lines
    assert "inserted 0 00000 3" in lines
    assert "failed 1 22P02" in lines
    assert 'invalid input syntax for type integer: "not a number"' in lines
    assert "selected 0 00000 2" in lines
    assert lines[-2:] == ["still", 'failed: invalid input syntax for type integer: "not a number"']
    assert "  2 | b" in result.stdout and "(2 rows)" in result.stdout
    assert "rsql:stdin:7: ERROR:  22P02: invalid input syntax for type integer" in result.stderr


def test_the_error_branch_exits_with_its_code_and_rolls_back(password: str, schema: str) -> None:
    script = f"""
    begin ;
    SET query_group to 'etl';
    CREATE TABLE {schema}.t (id integer);
    INSERT INTO {schema}.t VALUES (1);
    INSERT INTO {schema}.missing VALUES (1);
    \\if :ERROR <> 0
      \\echo 'Error Code -'
      \\echo :ERRORCODE
      \\remark :LAST_ERROR_MESSAGE
      \\exit 21
    \\else
      \\echo :ACTIVITYCOUNT
    \\endif
    commit ;
    \\exit 0
    """
    result = rsql(password, script)
    assert result.returncode == 21, result.stderr
    assert result.stdout.splitlines()[-3:] == [
        "Error Code -",
        "42P01",
        f'relation "{schema}.missing" does not exist',
    ]
    # \exit closed the session inside the transaction: nothing of it stayed.
    check = rsql(password, f"SELECT count(*) FROM {schema}.t;")
    assert "42P01" in check.stderr


def test_goto_skips_forward_and_says_which_labels_it_passed(password: str) -> None:
    result = rsql(
        password,
        """
        \\set limit 100
        SELECT 4307207 AS cnt;
        \\if :ACTIVITYCOUNT = 1 AND :limit > 10
            \\goto LABELB
        \\endif
        \\echo 'not run'
        \\label LABELA
        \\remark 'this is label LABELA'
        \\label LABELB
        \\remark 'this is label LABELB'
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3:] == [
        "\\label LABELA ignored",
        "\\label LABELB processed",
        "this is label LABELB",
    ]
    assert "not run" not in result.stdout


def test_on_error_stop_ends_the_script_with_3(password: str) -> None:
    result = rsql(password, "SELECT 1/0;\n\\echo 'after'\n", "-v", "ON_ERROR_STOP=1")
    assert result.returncode == 3
    assert "after" not in result.stdout
    assert "rsql:stdin:1: ERROR:  22012: division by zero" in result.stderr


@pytest.mark.parametrize(
    ("script", "line", "construct"),
    [
        ("\\rset maxerror 0\n", 3, "\\rset is not supported"),
        ("UNLOAD ('select 1') TO 's3://b/p' IAM_ROLE default;\n", 3, "UNLOAD is not supported"),
        ("\\goto nowhere\n", 3, "\\goto nowhere has no \\label nowhere after it"),
        ("\\if :ERROR = 0\n", 3, "\\if is never closed"),
        ("\\fancy\n", 3, "unknown meta-command \\fancy"),
    ],
)
def test_what_it_cannot_run_stops_the_script_before_any_sql(
    password: str, schema: str, script: str, line: int, construct: str
) -> None:
    result = rsql(password, f"CREATE TABLE {schema}.t (id int);\n\\echo 'ran'\n{script}")
    assert result.returncode == 3
    assert f"rsql:stdin:{line}: " in result.stderr and construct in result.stderr
    assert "ran" not in result.stdout
    assert "42P01" in rsql(password, f"SELECT * FROM {schema}.t;").stderr


def test_a_file_the_port_from_the_environment_and_rspassword_before_pgpassword(
    password: str, tmp_path: Path
) -> None:
    script = tmp_path / "job.sql"
    script.write_text("SELECT current_user AS who;\r\n\\sleep 0.05\r\n\\exit 4\r\n")
    result = rsql("", "", "-f", str(script), env={"RSPASSWORD": password, "PGPASSWORD": "wrong"})
    assert result.returncode == 4, result.stderr
    assert "awsuser" in result.stdout


def test_a_wrong_password_is_a_connection_failure(password: str) -> None:
    result = rsql(password + "x", "SELECT 1;")
    assert result.returncode == 2
    assert "cannot connect" in result.stderr and password not in result.stderr


def test_help_ends_with_an_example() -> None:
    result = subprocess.run(["rsql", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.rstrip().splitlines()[-1].strip() == "EOF"
    assert "example:" in result.stdout
