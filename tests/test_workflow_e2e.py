"""The whole product against the emulator: `rsql-cloud deploy`, `workflow put`, a real agent
running real scripts, `workflow start --wait`, and the audit rows, logs and data afterwards."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import agent_settings, agent_thread, wait_for, write_script

from agent.items import from_item
from agent.settings import Settings
from cloud.cli import main as cloud_main
from cloud.names import StackNames

REPO = Path(__file__).resolve().parent.parent
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ACCOUNT_REGION = "us-east-1:123456789012"

pytestmark = pytest.mark.usefixtures("emulator")


@dataclass(frozen=True)
class Deployed:
    names: StackNames
    activity_arn: str

    @property
    def stack_args(self) -> list[str]:
        return ["--stack-name", self.names.stack_name]


@pytest.fixture
def deployed(uid: str, capsys: pytest.CaptureFixture[str]) -> Deployed:
    names = StackNames(f"e2e{uid}")
    assert cloud_main(["deploy", "--stack-name", names.stack_name]) == 0
    capsys.readouterr()
    return Deployed(names, f"arn:aws:states:{ACCOUNT_REGION}:activity:{names.activity}")


def settings_for(deployed: Deployed, tmp_path: Path, **overrides: Any) -> Settings:
    stack = type(
        "S",
        (),
        {
            "activity_arn": deployed.activity_arn,
            "table": deployed.names.job_audit_table,
            "log_group": deployed.names.log_group,
        },
    )
    return agent_settings(tmp_path, stack, **overrides)  # type: ignore[arg-type]


def put_workflow(deployed: Deployed, tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / f"{config['workflow_id']}.json"
    path.write_text(json.dumps(config))
    assert cloud_main(["workflow", "put", str(path), *deployed.stack_args]) == 0


def start_and_wait(deployed: Deployed, workflow_id: str, execution_id: str) -> int:
    return cloud_main(
        [
            "workflow",
            "start",
            workflow_id,
            "--execution-id",
            execution_id,
            "--wait",
            "--timeout",
            "60",
            *deployed.stack_args,
        ]
    )


def workflow_row(aws: Any, deployed: Deployed, execution_id: str, workflow_id: str) -> dict:
    item = aws.ddb.get_item(
        TableName=deployed.names.workflow_audit_table,
        Key={"workflow_execution_id": {"S": execution_id}, "workflow_id": {"S": workflow_id}},
        ConsistentRead=True,
    ).get("Item", {})
    return from_item(item)


def job_row(aws: Any, deployed: Deployed, job: str, execution_id: str) -> dict:
    item = aws.ddb.get_item(
        TableName=deployed.names.job_audit_table,
        Key={"job_name": {"S": job}, "workflow_execution_id": {"S": execution_id}},
        ConsistentRead=True,
    ).get("Item", {})
    return from_item(item)


def lock_holder(aws: Any, deployed: Deployed, workflow_id: str) -> str | None:
    item = aws.ddb.get_item(
        TableName=deployed.names.config_table,
        Key={"workflow_id": {"S": workflow_id}},
        ConsistentRead=True,
    )["Item"]
    return item.get("running_execution_id", {}).get("S")


def stage(scripts: list[str], kind: str = "sequential", flag: str = "y", **extra: Any) -> dict:
    return {
        "execution_flag": flag,
        "execution_type": kind,
        "scripts": scripts,
        "stage_description": f"{kind} {scripts}",
        **extra,
    }


# -- the AWS sample's walkthrough ----------------------------------------------------------------


def test_sample_workflow_end_to_end(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(deployed, tmp_path, script_dir=REPO / "rsql_scripts")
    sample = REPO / "rsql_scripts" / "blog_test_workflow.json"
    assert cloud_main(["workflow", "put", str(sample), *deployed.stack_args]) == 0
    execution_id = "sample-run-1"
    with agent_thread(settings):
        assert start_and_wait(deployed, "blog_test_workflow", execution_id) == 0
    capsys.readouterr()

    jobs = [f"rsql_blog_script_{n}.sh" for n in range(1, 7)]
    row = workflow_row(aws, deployed, execution_id, "blog_test_workflow")
    assert row["execution_status"] == "Completed"
    assert row["rsql_jobs"] == jobs
    assert ISO_MS.match(row["execution_start_ts"]) and ISO_MS.match(row["execution_end_ts"])
    assert row["execution_start_ts"] <= row["execution_end_ts"]
    assert lock_holder(aws, deployed, "blog_test_workflow") is None

    for index, job in enumerate(jobs):
        job_audit = job_row(aws, deployed, job, execution_id)
        assert job_audit["execution_status"] == "Completed", job_audit
        assert job_audit["exit_code"] == 0
        assert job_audit["stage_index"] == index // 2
        assert job_audit["workflow_id"] == "blog_test_workflow"
        assert job_audit["instance_id"] == settings.instance_id
        assert job_audit["attempt"] == 1
        assert job_audit["duration_ms"] >= 0
        assert ISO_MS.match(job_audit["execution_start_ts"])
        assert ISO_MS.match(job_audit["execution_end_ts"])
        stream = f"blog_test_workflow/{execution_id}/{job}"
        assert job_audit["log_stream"] == stream
        lines = [
            e["message"]
            for e in aws.logs.get_log_events(
                logGroupName=deployed.names.log_group, logStreamName=stream, startFromHead=True
            )["events"]
        ]
        assert f"{job} job exited with error code 0" in lines

    # `workflow status --json` shows the same rows; `workflow logs` the CloudWatch lines.
    assert cloud_main(["workflow", "status", execution_id, "--json", *deployed.stack_args]) == 0
    status = json.loads(capsys.readouterr().out)
    assert json.dumps(status).count("Completed") >= 7
    assert (
        cloud_main(
            ["workflow", "logs", execution_id, "rsql_blog_script_4.sh", *deployed.stack_args]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rsql_blog_script_4.sh job started" in out and "INSERT 0 1" in out

    # The validation query of the AWS sample, with the secret's password.
    secret = json.loads(aws.secrets.get_secret_value(SecretId="rsql/redshift")["SecretString"])
    count = subprocess.run(
        [
            settings_env("RSQL_BIN"),
            "-h",
            secret["host"],
            "-p",
            str(secret["port"]),
            "-U",
            secret["username"],
            "-d",
            secret["dbname"],
            "-tAc",
            "select count(*) from rsql_blog.blog_table",
        ],
        env={"PGPASSWORD": secret["password"], "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert count.stdout.strip() == "4"


def settings_env(key: str) -> str:
    return os.environ[key]


def test_legacy_args_and_variables_reach_the_jobs_through_the_state_machine(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(deployed, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    write_script(settings.script_dir, "legacy.sh", f'echo "$# ${{2-}}" > {out}/legacy')
    write_script(settings.script_dir, "plain.sh", f'echo "$#" > {out}/plain')
    (settings.script_dir / "fill.sql").write_text(
        "\\echo '${GREETING}, ${RSQL_WORKFLOW_ID}'\nSELECT 1;\n"
    )
    config = {
        "workflow_id": "legacy_wf",
        "legacy_args": True,
        "variables": {"GREETING": "hello"},
        "workflow_stages": [
            stage(["legacy.sh"]),
            stage(["plain.sh"], legacy_args=False),
            stage(["fill.sql"]),
        ],
    }
    put_workflow(deployed, tmp_path, config)
    with agent_thread(settings):
        assert start_and_wait(deployed, "legacy_wf", "legacy-run-1") == 0
        assert (out / "legacy").read_text() == f"2 {settings.secret_id}\n"
        assert (out / "plain").read_text() == "0\n"
        assert (
            cloud_main(["workflow", "logs", "legacy-run-1", "fill.sql", *deployed.stack_args]) == 0
        )
        assert "hello, legacy_wf" in capsys.readouterr().out

        # An item put before these settings existed runs with neither.
        table = deployed.names.config_table
        aws.ddb.update_item(
            TableName=table,
            Key={"workflow_id": {"S": "legacy_wf"}},
            UpdateExpression="REMOVE legacy_args, variables, variables_json",
        )
        (out / "legacy").unlink()
        assert start_and_wait(deployed, "legacy_wf", "legacy-run-2") == 1
    capsys.readouterr()
    assert (out / "legacy").read_text() == "0 \n"
    row = job_row(aws, deployed, "fill.sql", "legacy-run-2")
    assert row["error"] == "RSQL.InvalidScript" and "${GREETING} (line 1)" in row["cause"]


# -- failures ------------------------------------------------------------------------------------


def test_failing_script_fails_the_workflow_at_once(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(deployed, tmp_path)
    marker = tmp_path / "never-ran"
    write_script(settings.script_dir, "ok.sh", "echo fine")
    write_script(
        settings.script_dir, "fail.sh", "echo 'ERROR: relation does not exist' >&2\nexit 3"
    )
    write_script(settings.script_dir, "never.sh", f"touch {marker}")
    workflow_id = "wf-fail"
    # The stage timeout is far away: the failure must come from the exit code, not a timeout.
    put_workflow(
        deployed,
        tmp_path,
        {
            "workflow_id": workflow_id,
            "workflow_description": "fails",
            "workflow_stages": [stage(["ok.sh", "fail.sh", "never.sh"], timeout_seconds=3600)],
        },
    )
    started = time.monotonic()
    with agent_thread(settings):
        code = start_and_wait(deployed, workflow_id, "fail-run-1")
    elapsed = time.monotonic() - started
    out = capsys.readouterr()
    assert code == 1
    assert elapsed < 30, f"the failure took {elapsed:.0f} s to surface"
    assert "RSQL.ScriptFailed" in out.out + out.err

    row = workflow_row(aws, deployed, "fail-run-1", workflow_id)
    assert row["execution_status"] == "Failed"
    assert row["error"] == "RSQL.ScriptFailed"
    assert "exit code 3" in row["cause"] and "relation does not exist" in row["cause"]
    failed = job_row(aws, deployed, "fail.sh", "fail-run-1")
    assert failed["execution_status"] == "Failed" and failed["exit_code"] == 3
    assert job_row(aws, deployed, "ok.sh", "fail-run-1")["execution_status"] == "Completed"
    assert job_row(aws, deployed, "never.sh", "fail-run-1") == {}
    assert not marker.exists()
    assert lock_holder(aws, deployed, workflow_id) is None


def test_missing_workflow_fails_with_a_clear_error(
    aws: Any, deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cloud_main(["workflow", "start", "no-such-workflow", *deployed.stack_args])
    assert code != 0
    assert "no-such-workflow" in capsys.readouterr().err


# -- stages --------------------------------------------------------------------------------------


def rendezvous_script(directory: Path, me: str, peers: list[str]) -> str:
    """Touch my file, then wait until every peer's is there: only passes when run together."""
    waits = " ".join(str(directory / p) for p in peers)
    return f"""
        touch {directory / me}
        for i in $(seq 1 200); do
            all=1; for f in {waits}; do [ -e "$f" ] || all=0; done
            [ $all = 1 ] && {{ echo "met all peers"; exit 0; }}
            sleep 0.05
        done
        echo "peers never showed up" >&2; exit 9
    """


def order_script(directory: Path, me: str, before: list[str], after: list[str]) -> str:
    """Fail unless every `before` job has finished and no `after` job has started."""
    checks = "".join(f"[ -e {directory / b}.done ] || exit 11\n" for b in before)
    checks += "".join(f"[ -e {directory / a}.started ] && exit 12\n" for a in after)
    return f"touch {directory / me}.started\n{checks}sleep 0.2\ntouch {directory / me}.done"


def test_parallel_jobs_overlap_and_sequential_jobs_do_not(
    aws: Any, deployed: Deployed, tmp_path: Path
) -> None:
    settings = settings_for(deployed, tmp_path, concurrency=4)
    marks = tmp_path / "marks"
    marks.mkdir()
    seq = ["s1.sh", "s2.sh", "s3.sh"]
    par = ["p1.sh", "p2.sh", "p3.sh"]
    for i, name in enumerate(seq):
        body = order_script(marks, name, seq[:i], seq[i + 1 :] + par)
        write_script(settings.script_dir, name, body)
    for name in par:
        write_script(settings.script_dir, name, rendezvous_script(marks, name, par))
    put_workflow(
        deployed,
        tmp_path,
        {
            "workflow_id": "wf-stages",
            "workflow_description": "order",
            "workflow_stages": [stage(seq), stage(par, "parallel")],
        },
    )
    with agent_thread(settings):
        assert start_and_wait(deployed, "wf-stages", "stages-run-1") == 0

    rows = {j: job_row(aws, deployed, j, "stages-run-1") for j in seq + par}
    assert all(r["execution_status"] == "Completed" for r in rows.values()), rows
    for first, second in itertools.pairwise(seq):
        assert rows[first]["execution_end_ts"] <= rows[second]["execution_start_ts"]
    assert max(rows[p]["execution_start_ts"] for p in par) < min(
        rows[p]["execution_end_ts"] for p in par
    )


def test_max_parallel_bounds_a_parallel_stage(aws: Any, deployed: Deployed, tmp_path: Path) -> None:
    settings = settings_for(deployed, tmp_path, concurrency=6)
    running = tmp_path / "running"
    running.mkdir()
    jobs = [f"m{i}.sh" for i in range(5)]
    for name in jobs:
        # Each records how many jobs run beside it, with a lock so the count is exact.
        write_script(
            settings.script_dir,
            name,
            f"""
            exec 9>{tmp_path}/lock
            flock 9; touch {running}/{name}; ls {running} | wc -l >> {tmp_path}/seen; flock -u 9
            sleep 0.3
            flock 9; rm {running}/{name}; flock -u 9
            """,
        )
    put_workflow(
        deployed,
        tmp_path,
        {
            "workflow_id": "wf-maxpar",
            "workflow_description": "bounded",
            "workflow_stages": [stage(jobs, "parallel", max_parallel=2)],
        },
    )
    with agent_thread(settings):
        assert start_and_wait(deployed, "wf-maxpar", "maxpar-run-1") == 0
    seen = [int(n) for n in (tmp_path / "seen").read_text().split()]
    assert len(seen) == 5 and max(seen) <= 2


def test_stage_with_execution_flag_n_is_skipped(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(deployed, tmp_path)
    marker = tmp_path / "skipped-ran"
    write_script(settings.script_dir, "first.sh", "echo first")
    write_script(settings.script_dir, "skipped.sh", f"touch {marker}")
    write_script(settings.script_dir, "last.sh", "echo last")
    put_workflow(
        deployed,
        tmp_path,
        {
            "workflow_id": "wf-skip",
            "workflow_description": "skip",
            "workflow_stages": [
                stage(["first.sh"]),
                stage(["skipped.sh"], flag="n"),
                stage(["last.sh"]),
            ],
        },
    )
    with agent_thread(settings):
        assert start_and_wait(deployed, "wf-skip", "skip-run-1") == 0
    assert not marker.exists()
    assert job_row(aws, deployed, "skipped.sh", "skip-run-1") == {}
    assert job_row(aws, deployed, "last.sh", "skip-run-1")["execution_status"] == "Completed"
    capsys.readouterr()
    assert cloud_main(["workflow", "status", "skip-run-1", "--json", *deployed.stack_args]) == 0
    assert "Skipped" in capsys.readouterr().out


# -- one run at a time ---------------------------------------------------------------------------


@pytest.fixture
def blocking_workflow(deployed: Deployed, tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    settings = settings_for(deployed, tmp_path)
    release = tmp_path / "release"
    started = tmp_path / "started"
    write_script(
        settings.script_dir,
        "block.sh",
        f"touch {started}\nfor i in $(seq 1 600); do [ -e {release} ] && exit 0; sleep 0.05; done\n"
        "exit 7",
    )
    put_workflow(
        deployed,
        tmp_path,
        {
            "workflow_id": "wf-once",
            "workflow_description": "one at a time",
            "workflow_stages": [stage(["block.sh"])],
        },
    )
    yield settings, release
    release.touch()


def test_a_running_workflow_cannot_start_twice(
    aws: Any,
    deployed: Deployed,
    tmp_path: Path,
    blocking_workflow: tuple[Settings, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, release = blocking_workflow
    first: list[int] = []
    with agent_thread(settings):
        waiter = threading.Thread(
            target=lambda: first.append(start_and_wait(deployed, "wf-once", "once-run-1"))
        )
        waiter.start()
        wait_for(lambda: (tmp_path / "started").exists(), 30, "the first run's job to start")

        # The CLI refuses at once and names the running execution.
        capsys.readouterr()
        began = time.monotonic()
        code = cloud_main(["workflow", "start", "wf-once", *deployed.stack_args])
        assert code != 0 and time.monotonic() - began < 10
        err = capsys.readouterr().err
        assert "already running" in err and "once-run-1" in err

        # Bypassing the CLI, the state machine's own lock refuses it too, without running jobs.
        machine = f"arn:aws:states:{ACCOUNT_REGION}:stateMachine:{deployed.names.state_machine}"
        arn = aws.sfn.start_execution(
            stateMachineArn=machine, name="once-run-2", input=json.dumps({"workflow_id": "wf-once"})
        )["executionArn"]
        second = wait_for(
            lambda: (
                (d := aws.sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d
            ),
            30,
            "the second execution to end",
        )
        assert second["status"] == "FAILED" and second["error"] == "Workflow.AlreadyRunning"
        assert job_row(aws, deployed, "block.sh", "once-run-2") == {}
        assert lock_holder(aws, deployed, "wf-once") == "once-run-1"

        release.touch()
        waiter.join(60)
    assert first == [0]
    assert lock_holder(aws, deployed, "wf-once") is None


def test_restart_runs_again_from_the_failure_point(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(deployed, tmp_path)
    runs = tmp_path / "runs"
    # Each script appends its name to `runs`, so the file says what ran, in what order.
    write_script(settings.script_dir, "first.sh", f"echo first >> {runs}")
    write_script(settings.script_dir, "flaky.sh", f"echo flaky >> {runs}\nexit 4")
    write_script(settings.script_dir, "last.sh", f"echo last >> {runs}")
    workflow_id = "wf-restart"
    put_workflow(
        deployed,
        tmp_path,
        {
            "workflow_id": workflow_id,
            "workflow_stages": [stage(["first.sh"]), stage(["flaky.sh", "last.sh"])],
        },
    )
    with agent_thread(settings):
        assert start_and_wait(deployed, workflow_id, "restart-run-1") == 1
        assert runs.read_text().split() == ["first", "flaky"]
        # The operator fixes the script, then restarts the failed run.
        write_script(settings.script_dir, "flaky.sh", f"echo flaky-fixed >> {runs}")
        code = cloud_main(
            [
                "workflow", "start", workflow_id, "--execution-id", "restart-run-2",
                "--restart-of", "restart-run-1", "--wait", "--timeout", "60",
                *deployed.stack_args,
            ]
        )  # fmt: skip
    capsys.readouterr()
    assert code == 0
    # first.sh completed in the failed run: recorded Skipped, not run again.
    assert runs.read_text().split() == ["first", "flaky", "flaky-fixed", "last"]
    assert job_row(aws, deployed, "first.sh", "restart-run-2")["execution_status"] == "Skipped"
    for job in ("flaky.sh", "last.sh"):
        row = job_row(aws, deployed, job, "restart-run-2")
        assert row["execution_status"] == "Completed" and row["exit_code"] == 0
    row = workflow_row(aws, deployed, "restart-run-2", workflow_id)
    assert row["execution_status"] == "Completed"
    assert row.get("restart_of") == "restart-run-1"
    assert lock_holder(aws, deployed, workflow_id) is None


# -- metrics -------------------------------------------------------------------------------------


def test_the_agents_metrics_carry_the_wait_since_the_state_machine_scheduled_each_task(
    aws: Any, deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(
        deployed,
        tmp_path,
        metrics_enabled=True,
        metrics_log_group=deployed.names.metrics_log_group,
        metrics_interval_s=1,
    )
    for name in ("a.sh", "b.sh", "c.sh"):
        write_script(settings.script_dir, name, "sleep 0.2")
    put_workflow(
        deployed,
        tmp_path,
        {
            "workflow_id": "wf-metrics",
            "workflow_description": "metrics",
            "workflow_stages": [stage(["a.sh"]), stage(["b.sh", "c.sh"], kind="parallel")],
        },
    )
    with agent_thread(settings):
        assert start_and_wait(deployed, "wf-metrics", "metrics-run-1") == 0
    capsys.readouterr()
    lines = [
        json.loads(event["message"])
        for event in aws.logs.get_log_events(
            logGroupName=deployed.names.metrics_log_group,
            logStreamName=settings.instance_id,
            startFromHead=True,
        )["events"]
    ]
    assert sum(line.get("JobsStarted", 0) for line in lines) == 3
    assert sum(line.get("JobsCompleted", 0) for line in lines) == 3
    # The Task state passes $$.State.EnteredTime as scheduled_at: every first attempt waited
    # a measurable, plausible time between being scheduled and reaching the agent.
    waits = [wait for line in lines for wait in line.get("TaskWaitTime", [])]
    assert len(waits) == 3 and all(0 <= wait < 30_000 for wait in waits)
