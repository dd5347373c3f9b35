"""`rsql-cloud workflow put/start/status/logs` against the emulator, with the test itself in
the agent's place where a run needs one (it takes the activity tasks and answers them), and
the progress view on its own."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import wait_for

from cloud.cli import main as cloud_main
from cloud.config import parse_workflow
from cloud.names import StackNames
from cloud.progress import ProgressView, Snapshot
from cloud.reports import JobStatus
from cloud.runs import execution_name

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ARN_PREFIX = "arn:aws:states:us-east-1:123456789012"


@pytest.fixture(scope="module")
def names(emulator: Any) -> Iterator[StackNames]:
    """One stack for the module: every test uses workflow ids of its own."""
    stack = StackNames(f"wfc{uuid.uuid4().hex[:8]}")
    assert cloud_main(["deploy", "--stack-name", stack.stack_name]) == 0
    yield stack


def run(names: StackNames, *args: str) -> int:
    return cloud_main([*args, "--stack-name", names.stack_name])


def stage(scripts: list[str], kind: str = "sequential", flag: str = "y") -> dict[str, Any]:
    return {"execution_flag": flag, "execution_type": kind, "scripts": scripts}


def put(names: StackNames, tmp_path: Path, workflow_id: str, *stages: dict[str, Any]) -> Path:
    path = tmp_path / f"{workflow_id}.json"
    path.write_text(json.dumps({"workflow_id": workflow_id, "workflow_stages": list(stages)}))
    with contextlib.redirect_stdout(io.StringIO()):
        assert run(names, "workflow", "put", str(path)) == 0
    return path


def config_item(aws: Any, names: StackNames, workflow_id: str) -> dict[str, Any]:
    return dict(
        aws.ddb.get_item(
            TableName=names.config_table,
            Key={"workflow_id": {"S": workflow_id}},
            ConsistentRead=True,
        ).get("Item", {})
    )


def lock_of(aws: Any, names: StackNames, workflow_id: str) -> str | None:
    return config_item(aws, names, workflow_id).get("running_execution_id", {}).get("S")


def execution_arn(names: StackNames, name: str) -> str:
    return f"{ARN_PREFIX}:execution:{names.state_machine}:{name}"


def status_of(aws: Any, names: StackNames, name: str) -> str:
    return str(aws.sfn.describe_execution(executionArn=execution_arn(names, name))["status"])


def take_task(aws: Any, names: StackNames, timeout_s: float = 20) -> dict[str, Any]:
    """Do what an agent does first: take the next activity task of the stack."""
    arn = f"{ARN_PREFIX}:activity:{names.activity}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = aws.sfn.get_activity_task(activityArn=arn, workerName="test")
        if task.get("taskToken"):
            return {"token": task["taskToken"], **json.loads(task["input"])}
    raise AssertionError("no activity task came")


def write_job_row(aws: Any, names: StackNames, task: dict[str, Any], status: str) -> None:
    aws.ddb.put_item(
        TableName=names.job_audit_table,
        Item={
            "job_name": {"S": task["job_name"]},
            "workflow_execution_id": {"S": task["workflow_execution_id"]},
            "workflow_id": {"S": task["workflow_id"]},
            "stage_index": {"N": str(task["stage_index"])},
            "execution_status": {"S": status},
            "exit_code": {"N": "0"},
            "duration_ms": {"N": "1500"},
            "attempt": {"N": "1"},
        },
    )


class InThread:
    """A CLI command run in a thread (as `--wait` blocks); `.code` once it returns."""

    def __init__(self, names: StackNames, *args: str) -> None:
        self.code: int | None = None
        self._thread = threading.Thread(target=self._run, args=(names, args), daemon=True)
        self._thread.start()

    def _run(self, names: StackNames, args: tuple[str, ...]) -> None:
        self.code = run(names, *args)

    def join(self, timeout_s: float = 30) -> int | None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the command did not return"
        return self.code


def stop(aws: Any, names: StackNames, name: str) -> None:
    aws.sfn.stop_execution(executionArn=execution_arn(names, name), error="Test.Stop", cause="x")
    wait_for(lambda: status_of(aws, names, name) == "ABORTED", 10, f"{name} to stop")


# -- put ------------------------------------------------------------------------------------------


def test_put_writes_the_item_with_every_default(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = Path(__file__).resolve().parent.parent / "rsql_scripts" / "blog_test_workflow.json"
    data = json.loads(sample.read_text())
    data["workflow_id"] = "wf-put"
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(data))
    assert run(names, "workflow", "put", str(path)) == 0
    assert "Created workflow wf-put (3 stages, 6 jobs)" in capsys.readouterr().out
    assert config_item(aws, names, "wf-put") == parse_workflow(data).to_item()
    assert run(names, "workflow", "put", str(path)) == 0
    assert "Updated workflow wf-put" in capsys.readouterr().out


def test_put_again_keeps_the_running_lock_and_drops_stale_attributes(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = put(names, tmp_path, "wf-relock", stage(["a.sh"]))
    aws.ddb.update_item(
        TableName=names.config_table,
        Key={"workflow_id": {"S": "wf-relock"}},
        UpdateExpression="SET running_execution_id = :e, leftover = :x",
        ExpressionAttributeValues={":e": {"S": "exec-holding"}, ":x": {"S": "old"}},
    )
    capsys.readouterr()
    path.write_text(json.dumps({"workflow_id": "wf-relock", "workflow_stages": [stage(["b.sh"])]}))
    assert run(names, "workflow", "put", str(path)) == 0
    assert "running as execution exec-holding" in capsys.readouterr().err
    item = config_item(aws, names, "wf-relock")
    assert item["running_execution_id"] == {"S": "exec-holding"}
    assert item["workflow_stages"]["L"][0]["M"]["scripts"] == {"L": [{"S": "b.sh"}]}
    assert "leftover" not in item


def test_put_reports_every_mistake_on_stderr_and_writes_nothing(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "workflow_id": "wf-bad-put",
                "workflow_stages": [stage(["a/b.sh"], kind="paralel"), stage(["x.sh", "x.sh"])],
            }
        )
    )
    assert run(names, "workflow", "put", str(path)) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"rsql-cloud: {path}: workflow_stages[0].execution_type: must be 'sequential' or "
        "'parallel', got 'paralel'",
        f"rsql-cloud: {path}: workflow_stages[0].scripts[0]: job name 'a/b.sh' must not "
        "contain a path separator",
    ]
    assert config_item(aws, names, "wf-bad-put") == {}
    path.write_text('{"workflow_id": "x",\n  "workflow_stages": [}')
    assert run(names, "workflow", "put", str(path)) == 1
    assert capsys.readouterr().err == (
        f"rsql-cloud: {path}: line 2 column 23: not valid JSON: Expecting value\n"
    )


def test_every_command_on_a_stack_not_deployed_says_deploy_first(
    tmp_path: Path, emulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = StackNames(f"none{uuid.uuid4().hex[:8]}")
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"workflow_id": "w", "workflow_stages": [stage(["a.sh"])]}))
    for command in (
        ["workflow", "put", str(path)],
        ["workflow", "start", "w"],
        ["workflow", "status", "e"],
        ["workflow", "logs", "e"],
    ):
        assert run(missing, *command) == 1, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"run `rsql-cloud deploy --stack-name {missing.stack_name}` first" in err, err


# -- start ----------------------------------------------------------------------------------------


def test_start_of_a_workflow_not_configured_fails_fast(
    names: StackNames, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(names, "workflow", "start", "wf-nowhere") == 1
    assert capsys.readouterr().err == (
        f"rsql-cloud: workflow 'wf-nowhere' is not configured in table {names.config_table}: "
        "put it first with `rsql-cloud workflow put FILE.json`\n"
    )


def test_execution_names_follow_step_functions_rules() -> None:
    moment = dt.datetime(2026, 11, 27, 8, 1, 2, tzinfo=dt.UTC)
    assert execution_name("blog_test_workflow", moment, "ab12") == (
        "blog_test_workflow-20261127T080102-ab12"
    )
    long = execution_name("a.b" * 30, moment, "ab12")
    assert len(long) == 80 and long.endswith("-20261127T080102-ab12")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", long)
    generated = execution_name("wf")
    assert re.fullmatch(r"wf-\d{8}T\d{6}-[0-9a-f]{4}", generated)
    assert generated != execution_name("wf")


def test_a_bad_or_taken_execution_id_is_refused(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(names, tmp_path, "wf-ids", stage(["a.sh"]))
    assert run(names, "workflow", "start", "wf-ids", "--execution-id", "has space") == 1
    assert "--execution-id: must be 1-80 letters, digits" in capsys.readouterr().err
    assert run(names, "workflow", "start", "wf-ids", "--execution-id", "ids-1") == 0
    wait_for(lambda: lock_of(aws, names, "wf-ids") == "ids-1", 10, "the lock")
    stop(aws, names, "ids-1")
    capsys.readouterr()
    assert run(names, "workflow", "start", "wf-ids", "--execution-id", "ids-1") == 1
    assert "an execution named 'ids-1' already exists" in capsys.readouterr().err


def test_start_refuses_while_running_and_clears_the_lock_of_a_stopped_run(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(names, tmp_path, "wf-lock", stage(["a.sh"]))
    # No agent: the run waits on its activity task, so the watch times out.
    began = time.monotonic()
    code = run(names, "workflow", "start", "wf-lock", "--execution-id", "lock-1", "--wait",
               "--timeout", "1")  # fmt: skip
    assert code == 124 and time.monotonic() - began < 10
    assert "still running after 1 s" in capsys.readouterr().err
    wait_for(lambda: lock_of(aws, names, "wf-lock") == "lock-1", 10, "the run to take its lock")

    assert run(names, "workflow", "start", "wf-lock") == 1
    err = capsys.readouterr().err
    assert "workflow wf-lock is already running as execution lock-1; wait for it or stop it" in err

    stop(aws, names, "lock-1")
    # StopExecution skips the state machine's Catch: the lock stays behind.
    assert lock_of(aws, names, "wf-lock") == "lock-1"
    assert run(names, "workflow", "start", "wf-lock", "--execution-id", "lock-2") == 0
    assert "cleared the lock left by execution lock-1 (ABORTED)" in capsys.readouterr().err
    row = aws.ddb.get_item(
        TableName=names.workflow_audit_table,
        Key={"workflow_execution_id": {"S": "lock-1"}, "workflow_id": {"S": "wf-lock"}},
        ConsistentRead=True,
    )["Item"]
    assert row["execution_status"] == {"S": "Cancelled"}
    assert ISO_MS.match(row["execution_end_ts"]["S"])
    assert row["error"] == {"S": "Test.Stop"}
    wait_for(lambda: lock_of(aws, names, "wf-lock") == "lock-2", 10, "the new run's lock")
    stop(aws, names, "lock-2")


def test_restart_of_must_name_an_ended_unsuccessful_run_of_the_same_workflow(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(names, tmp_path, "wf-ra", stage(["a.sh"]))
    put(names, tmp_path, "wf-rb", stage(["b.sh"]))
    assert run(names, "workflow", "start", "wf-ra", "--execution-id", "ra-1") == 0
    wait_for(lambda: lock_of(aws, names, "wf-ra") == "ra-1", 10, "the lock")
    capsys.readouterr()

    def refused(workflow_id: str, restart_of: str) -> str:
        assert run(names, "workflow", "start", workflow_id, "--restart-of", restart_of) == 1
        return capsys.readouterr().err

    assert "--restart-of: execution ra-1 is still running" in refused("wf-rb", "ra-1")
    stop(aws, names, "ra-1")
    assert "--restart-of: execution ra-1 ran workflow 'wf-ra', not 'wf-rb'" in refused(
        "wf-rb", "ra-1"
    )
    assert "--restart-of: no execution 'ra-0'" in refused("wf-ra", "ra-0")

    args = ["workflow", "start", "wf-ra", "--restart-of", "ra-1", "--execution-id", "ra-2"]
    assert run(names, *args) == 0
    described = aws.sfn.describe_execution(executionArn=execution_arn(names, "ra-2"))
    assert json.loads(described["input"]) == {"workflow_id": "wf-ra", "restart_of": "ra-1"}
    wait_for(lambda: lock_of(aws, names, "wf-ra") == "ra-2", 10, "the lock")
    stop(aws, names, "ra-2")


def test_wait_shows_progress_and_exits_0_when_the_run_succeeds(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(
        names,
        tmp_path,
        "wf-ok",
        stage(["ok1.sh", "ok2.sh"], kind="parallel"),
        stage(["off.sh"], flag="n"),
    )
    watch = InThread(names, "workflow", "start", "wf-ok", "--execution-id", "ok-1", "--wait",
                     "--timeout", "30")  # fmt: skip
    tasks = [take_task(aws, names), take_task(aws, names)]
    assert sorted(t["job_name"] for t in tasks) == ["ok1.sh", "ok2.sh"]
    assert tasks[0]["heartbeat_seconds"] == 60 and tasks[0]["timeout_seconds"] == 86400
    for task in tasks:
        write_job_row(aws, names, task, "Completed")
        aws.sfn.send_task_success(taskToken=task["token"], output=json.dumps({"status": "ok"}))
    assert watch.join() == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Started execution ok-1 of workflow wf-ok"
    assert lines[-1] == "Execution ok-1 SUCCEEDED"
    # Not a terminal: each change once, no redraws.
    for job in ("ok1.sh", "ok2.sh"):
        assert sum(line.endswith(f"stage 1 {job}: Completed  1.5 s") for line in lines) == 1
    assert sum(line.endswith("stage 2 off.sh: Skipped") for line in lines) == 1
    assert "\x1b[" not in out

    assert run(names, "workflow", "start", "wf-ok", "--restart-of", "ok-1") == 1
    assert "execution ok-1 succeeded, there is nothing to restart" in capsys.readouterr().err


def test_wait_exits_1_with_the_error_and_cause_when_a_job_fails(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(names, tmp_path, "wf-ko", stage(["ko.sh", "never.sh"]))
    watch = InThread(names, "workflow", "start", "wf-ko", "--execution-id", "ko-1", "--wait")
    task = take_task(aws, names)
    assert task["job_name"] == "ko.sh"
    aws.sfn.send_task_failure(
        taskToken=task["token"],
        error="RSQL.ScriptFailed",
        cause="The script ko.sh exited with exit code 3.\nERROR: relation does not exist",
    )
    assert watch.join() == 1
    err = capsys.readouterr().err
    assert "rsql-cloud: execution ko-1 FAILED" in err
    assert "  error: RSQL.ScriptFailed" in err
    assert "exit code 3" in err and "relation does not exist" in err
    wait_for(lambda: lock_of(aws, names, "wf-ko") is None, 10, "the lock to be released")


# -- status ---------------------------------------------------------------------------------------


def test_status_shows_every_job_of_the_run(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(
        names,
        tmp_path,
        "wf-st",
        stage(["a.sh", "b.sh"]),
        stage(["c.sh"], flag="n"),
        stage(["d.sh"], kind="parallel"),
    )
    aws.ddb.put_item(
        TableName=names.workflow_audit_table,
        Item={
            "workflow_execution_id": {"S": "st-1"},
            "workflow_id": {"S": "wf-st"},
            "execution_status": {"S": "Failed"},
            "rsql_jobs": {"L": [{"S": j} for j in ("a.sh", "b.sh", "c.sh", "d.sh")]},
            "error": {"S": "RSQL.ScriptFailed"},
            "cause": {"S": "exit code 3"},
        },
    )
    for job, status, code in (("a.sh", "Completed", 0), ("b.sh", "Failed", 3)):
        aws.ddb.put_item(
            TableName=names.job_audit_table,
            Item={
                "job_name": {"S": job},
                "workflow_execution_id": {"S": "st-1"},
                "stage_index": {"N": "0"},
                "execution_status": {"S": status},
                "exit_code": {"N": str(code)},
                "duration_ms": {"N": "2500"},
            },
        )
    assert run(names, "workflow", "status", "st-1", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["workflow"]["execution_status"] == "Failed"
    assert report["execution"] is None  # written by hand: Step Functions never saw it
    assert [(j["job_name"], j["stage_index"], j["execution_status"]) for j in report["jobs"]] == [
        ("a.sh", 0, "Completed"),
        ("b.sh", 0, "Failed"),
        ("c.sh", 1, "Skipped"),
        ("d.sh", 2, "-"),
    ]
    assert report["jobs"][1]["exit_code"] == 3

    assert run(names, "workflow", "status", "st-1") == 0
    out = capsys.readouterr().out
    assert "Status      Failed" in out and "Error       RSQL.ScriptFailed" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])]
    assert [row[:4] for row in rows] == [
        ["1", "a.sh", "Completed", "0"],
        ["1", "b.sh", "Failed", "3"],
        ["2", "c.sh", "Skipped", "-"],
        ["3", "d.sh", "-", "-"],
    ]

    assert run(names, "workflow", "status", "st-0") == 1
    assert "no execution 'st-0'" in capsys.readouterr().err


# -- logs -----------------------------------------------------------------------------------------


def test_logs_print_one_job_or_all_jobs_prefixed_in_job_order(
    aws: Any, names: StackNames, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = ["job1", "job2", "job10", "big"]
    aws.ddb.put_item(
        TableName=names.workflow_audit_table,
        Item={
            "workflow_execution_id": {"S": "lg-1"},
            "workflow_id": {"S": "wf-lg"},
            "execution_status": {"S": "Completed"},
            "rsql_jobs": {"L": [{"S": j} for j in jobs]},
        },
    )
    now = int(time.time() * 1000)

    def stream(name: str, *lines: str) -> None:
        aws.logs.create_log_stream(logGroupName=names.log_group, logStreamName=name)
        for start in range(0, len(lines), 10_000):
            chunk = lines[start : start + 10_000]
            aws.logs.put_log_events(
                logGroupName=names.log_group,
                logStreamName=name,
                logEvents=[{"timestamp": now + start, "message": m} for m in chunk],
            )

    stream("wf-lg/lg-1/job10", "ten")
    stream("wf-lg/lg-1/job2/2", "two, second attempt")
    stream("wf-lg/lg-1/job2", "two, first attempt")
    stream("wf-lg/lg-1/job1", "one a", "one b", "one c")
    stream("wf-lg/lg-2/job1", "another run")
    stream("wf-lg/lg-1/big", *(f"line {n}" for n in range(10_050)))

    assert run(names, "workflow", "logs", "lg-1", "job1") == 0
    assert capsys.readouterr().out == "one a\none b\none c\n"
    assert run(names, "workflow", "logs", "lg-1", "job2") == 0
    assert capsys.readouterr().out == "job2 | two, first attempt\njob2#2 | two, second attempt\n"
    # More than one page of GetLogEvents.
    assert run(names, "workflow", "logs", "lg-1", "big") == 0
    big = capsys.readouterr().out.splitlines()
    assert big == [f"line {n}" for n in range(10_050)]

    assert run(names, "workflow", "logs", "lg-1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:6] == [
        "job1 | one a",
        "job1 | one b",
        "job1 | one c",
        "job2 | two, first attempt",
        "job2#2 | two, second attempt",
        "job10 | ten",
    ]
    assert len(lines) == 6 + 10_050 and "another run" not in "".join(lines)

    assert run(names, "workflow", "logs", "lg-1", "job3") == 1
    assert "job 'job3' is not part of execution lg-1" in capsys.readouterr().err


def test_logs_follow_prints_new_lines_until_the_run_ends(
    aws: Any, names: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(names, tmp_path, "wf-fo", stage(["fo.sh"]))
    assert run(names, "workflow", "start", "wf-fo", "--execution-id", "fo-1") == 0
    wait_for(lambda: lock_of(aws, names, "wf-fo") == "fo-1", 10, "the run to start")
    capsys.readouterr()
    follow = InThread(names, "workflow", "logs", "fo-1", "--follow")
    stream = "wf-fo/fo-1/fo.sh"
    aws.logs.create_log_stream(logGroupName=names.log_group, logStreamName=stream)
    now = int(time.time() * 1000)
    for n in range(3):
        aws.logs.put_log_events(
            logGroupName=names.log_group,
            logStreamName=stream,
            logEvents=[{"timestamp": now + n, "message": f"step {n}"}],
        )
    stop(aws, names, "fo-1")
    assert follow.join() == 0
    assert capsys.readouterr().out.splitlines() == [f"fo.sh | step {n}" for n in range(3)]


# -- the CLI itself -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["deploy"],
        ["destroy"],
        ["workflow", "put"],
        ["workflow", "validate"],
        ["workflow", "start"],
        ["workflow", "status"],
        ["workflow", "logs"],
        ["iam", "agent-policy"],
    ],
)
def test_every_command_has_help_with_an_example(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cloud_main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--stack-name" in out and "example:\n  rsql-cloud " in out


def test_emulator_is_delegated(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cloud_main(["emulator", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--port" in out and "--data-dir" in out


def test_usage_mistakes_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["workflow", "start", "wf", "--timeout", "5"],
        ["deploy", "--stack-name", "bad name"],
        ["workflow", "start", "wf", "--wait", "--timeout", "0"],
    ):
        with pytest.raises(SystemExit) as done:
            cloud_main(args)
        assert done.value.code == 2, args
    assert "--timeout only applies with --wait" in capsys.readouterr().err


def test_validate_needs_no_aws(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"workflow_id": "w", "workflow_stages": [stage(["a.sh"])]}))
    assert cloud_main(["workflow", "validate", str(path)]) == 0
    assert "valid workflow w (1 stages, 1 jobs)" in capsys.readouterr().out


# -- the progress view ----------------------------------------------------------------------------


def snap(status: str, *jobs: tuple[str, str]) -> Snapshot:
    workflow = parse_workflow(
        {
            "workflow_id": "wf",
            "workflow_stages": [
                stage([jobs[0][0]], "sequential"),
                {**stage([j for j, _ in jobs[1:]], "parallel"), "stage_description": "loads"},
            ],
        }
    )
    statuses = [
        JobStatus(
            job, 0 if i == 0 else 1, state, {"duration_ms": 2000} if state == "Completed" else {}
        )
        for i, (job, state) in enumerate(jobs)
    ]
    return Snapshot(workflow, "exec-1", status, 3.0, statuses)


def test_progress_off_a_terminal_prints_only_changes() -> None:
    written: list[str] = []
    view = ProgressView(written.append, tty=False)
    view.show(snap("RUNNING", ("a.sh", "Running"), ("b.sh", "-"), ("c.sh", "-")))
    view.show(snap("RUNNING", ("a.sh", "Running"), ("b.sh", "-"), ("c.sh", "-")))
    view.show(snap("SUCCEEDED", ("a.sh", "Completed"), ("b.sh", "Completed"), ("c.sh", "-")))
    text = "".join(written)
    assert [line[9:] for line in text.splitlines()] == [
        "execution exec-1: RUNNING",
        "stage 1 a.sh: Running",
        "stage 1 a.sh: Completed  2.0 s",
        "stage 2 b.sh: Completed  2.0 s",
        "execution exec-1: SUCCEEDED",
    ]


def test_progress_on_a_terminal_redraws_in_place_within_its_width() -> None:
    written: list[str] = []
    view = ProgressView(written.append, tty=True, width=40)
    view.show(snap("RUNNING", ("a.sh", "Running"), ("b" * 60 + ".sh", "-")))
    first = written[-1]
    assert not first.startswith("\x1b[") or first.startswith("\x1b[1m")
    height = first.count("\n")
    assert height == 5  # header, 2 stage lines, 2 jobs
    view.show(snap("SUCCEEDED", ("a.sh", "Completed"), ("b" * 60 + ".sh", "Completed")))
    second = written[-1]
    assert second.startswith(f"\x1b[{height}F\x1b[J")
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", second)
    assert all(len(line) < 40 for line in plain.splitlines())
    assert plain.splitlines()[0].startswith("SUCCEEDED")
    assert "\x1b[32mCompleted\x1b[0m" in second


def test_progress_taller_than_the_terminal_shows_a_summary_per_stage() -> None:
    written: list[str] = []
    jobs = [("first.sh", "Completed")] + [(f"j{n}.sh", "-") for n in range(30)]
    jobs[5] = ("j4.sh", "Running")
    jobs[9] = ("j8.sh", "Failed")
    view = ProgressView(written.append, tty=True, width=80, height=10)
    view.show(snap("RUNNING", *jobs))
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", written[-1]).splitlines()
    assert plain[1:] == [
        "Stage 1/2 (sequential)  Completed 1",
        "Stage 2/2 (parallel)  - 28, Running 1, Failed 1",
        "  Running    j4.sh",
        "  Failed     j8.sh",
    ]
