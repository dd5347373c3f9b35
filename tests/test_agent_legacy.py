"""Scripts as teams have them, under the real agent on the emulator: the AWS sample's style
(`source $1/get_redshift_creds.sh $2`, `rsql` with a here-document, `\\if :ERROR <> 0` ...
`\\exit 21`, Windows line endings) with `legacy_args`, and `.sql` jobs through `rsql -f`."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    Stack,
    agent_settings,
    agent_thread,
    audit_row,
    failure_of,
    finished,
    log_lines,
    make_stack,
    start,
    task_input,
)

from agent import logs

pytestmark = pytest.mark.usefixtures("emulator")


def sample_style_script(name: str, statement: str) -> str:
    """A script written the way the AWS sample writes them, with Windows line endings."""
    body = f"""source $1/get_redshift_creds.sh $2
rsql -h $HOST -U $USER -d $DB << EOF

\\echo ' ------------------------------- '
\\echo Start Time - $(date +"%T.%N")
\\echo '{name} job started'

begin ;

/* SET QUERY Group */
SET query_group to 'rsql_blog_querygroup';

{statement}

\\if :ERROR <> 0
 \\echo 'Insert Statement Failed with Below Details'
 \\echo 'Error Code -'
 \\echo :ERRORCODE
 \\remark :LAST_ERROR_MESSAGE
 \\exit 21
\\else
 \\echo :ACTIVITYCOUNT
 \\remark '\\n **** Statement Executed Successfully **** \\n'
\\endif

commit ;

\\echo '\\n ********** JOB COMPLETED SUCCESSFULLY *********** \\n'
\\exit 0

EOF

rsqlexitcode=$?
echo Completion Time - $(date +"%T.%N")
echo "{name} job exited with error code $rsqlexitcode"
exit $rsqlexitcode
"""
    return body.replace("\n", "\r\n")


@pytest.fixture
def stack(aws: Any, uid: str) -> Stack:
    return make_stack(aws, uid)


@pytest.fixture
def schema(uid: str) -> str:
    """A schema of this test's own, created in the emulator's PostgreSQL."""
    name = f"legacy_{uid.replace('-', '_')}"
    psql(f"CREATE SCHEMA {name}; CREATE TABLE {name}.blog_table (s_no int, script_name text)")
    return name


def psql(sql: str) -> str:
    """The emulator's psql, as the tests' reference client (not the rsql under test)."""
    import boto3

    secret = boto3.client("secretsmanager").get_secret_value(SecretId="rsql/redshift")
    password = json.loads(secret["SecretString"])["password"]
    result = subprocess.run(
        [os.environ["RSQL_BIN"], "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env={**os.environ, "PGPASSWORD": password},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def run_job(
    aws: Any, stack: Stack, uid: str, settings: Any, job: str, **fields: Any
) -> tuple[dict[str, Any], str]:
    """One task through the real agent; (the execution, the agent's JSON log)."""
    captured = io.StringIO()
    logs.configure(stream=captured)
    try:
        with agent_thread(settings):
            arn = start(aws, stack, task_input(uid, job, **fields), f"exec-{uid}")
            execution = finished(aws, arn, timeout_s=60)
    finally:
        logs.configure()
    execution["arn"] = arn
    return execution, captured.getvalue()


def test_a_sample_style_script_runs_unchanged(
    aws: Any, uid: str, stack: Stack, tmp_path: Path, schema: str
) -> None:
    settings = agent_settings(tmp_path, stack)
    script = settings.script_dir / "rsql_blog_script_3.sh"
    statement = f'INSERT INTO "{schema}"."blog_table" VALUES (\n\t1,\n    \'{script.name}\'\n);'
    text = sample_style_script(script.name, statement)
    script.write_bytes(text.encode())
    execution, agent_log = run_job(aws, stack, uid, settings, script.name, legacy_args=True)
    assert execution["status"] == "SUCCEEDED", failure_of(aws, execution["arn"])

    assert psql(f"SELECT s_no, script_name FROM {schema}.blog_table") == "1|rsql_blog_script_3.sh"
    log = settings.log_dir / f"wf-{uid}" / f"exec-{uid}" / f"{script.name}.log"
    lines = [text for _, _, text in log_lines(log)]
    assert "rsql_blog_script_3.sh job started" in lines
    assert lines[lines.index("INSERT 0 1") + 1] == "1"  # :ACTIVITYCOUNT
    assert " **** Statement Executed Successfully **** " in lines
    assert lines[-1] == "rsql_blog_script_3.sh job exited with error code 0"
    # The original keeps its line endings; the converted copy is gone; one warning said so.
    assert script.read_bytes() == text.encode()
    assert not any((settings.state_dir / "run").iterdir())
    warnings = [json.loads(e) for e in agent_log.splitlines() if "script_crlf_normalised" in e]
    assert len(warnings) == 1 and warnings[0]["job_name"] == script.name


def test_its_error_branch_exits_21_and_fails_the_job_with_the_sqlstate(
    aws: Any, uid: str, stack: Stack, tmp_path: Path, schema: str
) -> None:
    settings = agent_settings(tmp_path, stack)
    script = settings.script_dir / "rsql_blog_script_4.sh"
    statement = f'INSERT INTO "{schema}"."no_such_table" VALUES (2, \'rsql_blog_script_4.sh\');'
    script.write_bytes(sample_style_script(script.name, statement).encode())
    execution, _ = run_job(aws, stack, uid, settings, script.name, legacy_args=True)
    assert execution["status"] == "FAILED"
    error, cause = failure_of(aws, execution["arn"])
    assert error == "RSQL.ScriptFailed"
    assert cause.startswith(f"The script {script.name} failed with exit code 21.")
    assert "Error Code -\n42P01\n" in cause
    assert f'relation "{schema}.no_such_table" does not exist' in cause
    assert cause.endswith("rsql_blog_script_4.sh job exited with error code 21")
    row = audit_row(aws, stack, script.name, f"exec-{uid}")
    assert row["execution_status"] == "Failed" and row["exit_code"] == 21
    assert psql(f"SELECT count(*) FROM {schema}.blog_table") == "0"


def test_crlf_with_normalising_off_fails_at_once_saying_how_to_fix_it(
    aws: Any, uid: str, stack: Stack, tmp_path: Path
) -> None:
    settings = agent_settings(tmp_path, stack, normalise_crlf=False)
    script = settings.script_dir / "windows.sh"
    script.write_bytes(b"echo started > started\r\nexit 0\r\n")
    execution, _ = run_job(aws, stack, uid, settings, script.name)
    error, cause = failure_of(aws, execution["arn"])
    assert error == "RSQL.InvalidScript"
    assert "Windows line endings (CRLF)" in cause
    assert f"sed -i 's/\\r$//' {script}" in cause and f"dos2unix {script}" in cause
    assert not (settings.script_dir / "started").exists()
    row = audit_row(aws, stack, script.name, f"exec-{uid}")
    assert row["execution_status"] == "Failed" and row["error"] == "RSQL.InvalidScript"


def test_legacy_args_without_a_secret_fails_at_once(
    aws: Any, uid: str, stack: Stack, tmp_path: Path
) -> None:
    settings = agent_settings(tmp_path, stack, secret_id="")
    (settings.script_dir / "old.sh").write_text("source $1/get_redshift_creds.sh $2\n")
    execution, _ = run_job(aws, stack, uid, settings, "old.sh", legacy_args=True)
    error, cause = failure_of(aws, execution["arn"])
    assert error == "Agent.NotConfigured"
    assert "legacy_args" in cause and "RSQL_AGENT_SECRET_ID" in cause


def test_a_sql_job_fills_placeholders_and_runs_through_rsql(
    aws: Any, uid: str, stack: Stack, tmp_path: Path, schema: str
) -> None:
    settings = agent_settings(tmp_path, stack)
    (settings.script_dir / "load.sql").write_text(
        "SET query_group TO 'etl';\n"
        "INSERT INTO ${SCHEMA}.blog_table\n"
        "VALUES (${ROW_ID}, '${RSQL_JOB_NAME} in ${RSQL_WORKFLOW_ID}');\n"
        "CREATE TABLE ${SCHEMA}.copy (s_no int ENCODE az64) DISTKEY(s_no);\n"
    )
    variables = {"SCHEMA": schema, "ROW_ID": "7"}
    execution, _ = run_job(aws, stack, uid, settings, "load.sql", variables=variables)
    assert execution["status"] == "SUCCEEDED", failure_of(aws, execution["arn"])
    rows = psql(f"SELECT s_no, script_name FROM {schema}.blog_table")
    assert rows == f"7|load.sql in wf-{uid}"
    assert psql(f"SELECT count(*) FROM {schema}.copy") == "0"


def test_a_failing_statement_fails_the_sql_job_with_its_sqlstate(
    aws: Any, uid: str, stack: Stack, tmp_path: Path, schema: str
) -> None:
    settings = agent_settings(tmp_path, stack)
    (settings.script_dir / "bad.sql").write_text(
        "INSERT INTO ${SCHEMA}.blog_table VALUES (1, 'first');\n"
        "INSERT INTO ${SCHEMA}.blog_table VALUES ('one', 'second');\n"
        "INSERT INTO ${SCHEMA}.blog_table VALUES (3, 'never');\n"
    )
    execution, _ = run_job(aws, stack, uid, settings, "bad.sql", variables={"SCHEMA": schema})
    error, cause = failure_of(aws, execution["arn"])
    assert error == "RSQL.ScriptFailed"
    first = cause.splitlines()[0]
    assert first.startswith("The SQL job bad.sql failed with exit code 3: ")
    assert 'ERROR:  22P02: invalid input syntax for type integer: "one"' in first
    assert ":2: ERROR" in first  # the line of the failing statement
    assert psql(f"SELECT script_name FROM {schema}.blog_table") == "first"


def test_an_unknown_placeholder_fails_the_sql_job_before_any_sql_runs(
    aws: Any, uid: str, stack: Stack, tmp_path: Path, schema: str
) -> None:
    settings = agent_settings(tmp_path, stack)
    (settings.script_dir / "typo.sql").write_text(
        f"INSERT INTO {schema}.blog_table VALUES (1, 'ran');\n"
        "SELECT '${LOAD_DAET}', '${RSPASSWORD}';\n"
    )
    execution, _ = run_job(aws, stack, uid, settings, "typo.sql", variables={"LOAD_DATE": "x"})
    error, cause = failure_of(aws, execution["arn"])
    assert error == "RSQL.InvalidScript"
    assert "${LOAD_DAET} (line 2), ${RSPASSWORD} (line 2)" in cause and "no SQL ran" in cause
    assert psql(f"SELECT count(*) FROM {schema}.blog_table") == "0"


def test_a_sql_job_without_an_rsql_client_says_so(
    aws: Any, uid: str, stack: Stack, tmp_path: Path
) -> None:
    settings = agent_settings(tmp_path, stack, rsql_bin="no-such-rsql")
    (settings.script_dir / "x.sql").write_text("SELECT 1;\n")
    execution, _ = run_job(aws, stack, uid, settings, "x.sql")
    error, cause = failure_of(aws, execution["arn"])
    assert error == "Agent.NotConfigured" and "'no-such-rsql'" in cause
