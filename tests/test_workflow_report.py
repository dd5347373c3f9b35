"""`rsql-cloud workflow report` and `workflow history` against real runs on the emulator: a real
agent runs a workflow with a sequential and a parallel stage three times (the third slower in
one job and failing in another), then the page is opened in headless Chromium and what it
draws is measured against the audit rows.

The Chromium test needs Debian's `chromium` (`.ci/run` installs it when it is missing); on a
machine without it the test is skipped, except under CI (CI=true), where it fails.
Set RSQL_REPORT_SCREENSHOT=docs/report.png to save the page's screenshot there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import agent_settings, agent_thread, wait_for, write_script
from chromium import CHROMIUM, Chromium

from agent.items import from_item
from agent.settings import Settings
from cloud.cli import main as cloud_main
from cloud.names import StackNames
from cloud.report_html import MIN_BAR_PCT, SLOWER_RATIO

SEQUENTIAL = ["extract.sh", "transform.sh"]
PARALLEL = ["load_a.sh", "load_b.sh", "load_c.sh"]
JOBS = SEQUENTIAL + PARALLEL
RUNS = ["report-run-1", "report-run-2", "report-run-3"]
FAILED_RUN = RUNS[-1]
# What the failing job prints: markup that must reach the page as text.
HOSTILE = """<script>document.title="pwned"</script> & "quoted" <b>bold</b>"""
FILL = {"Completed": "rgb(46, 157, 88)", "Failed": "rgb(214, 69, 69)"}


@dataclass(frozen=True)
class Ran:
    names: StackNames
    workflow_id: str
    workflow_rows: dict[str, dict[str, Any]]  # by execution id
    job_rows: dict[tuple[str, str], dict[str, Any]]  # by (execution id, job)

    @property
    def stack_args(self) -> list[str]:
        return ["--stack-name", self.names.stack_name]


def scripts(script_dir: Path, marks: Path) -> None:
    """Stage 1 runs in order; in stage 2, load_b waits for its two siblings, so it ends last
    in every run, and in the last run it fails; transform is three times slower there."""
    write_script(script_dir, "extract.sh", "sleep 0.2; echo extracted")
    write_script(
        script_dir,
        "transform.sh",
        'case "$RSQL_WORKFLOW_EXECUTION_ID" in *-3) sleep 1.2;; *) sleep 0.3;; esac',
    )
    for job, pause in (("load_a.sh", 0.2), ("load_c.sh", 0.4)):
        write_script(
            script_dir, job, f'sleep {pause}; touch "{marks}/$RSQL_WORKFLOW_EXECUTION_ID.{job}"'
        )
    write_script(
        script_dir,
        "load_b.sh",
        f"""
        for i in $(seq 1 400); do
          [ -e "{marks}/$RSQL_WORKFLOW_EXECUTION_ID.load_a.sh" ] &&
            [ -e "{marks}/$RSQL_WORKFLOW_EXECUTION_ID.load_c.sh" ] && break
          sleep 0.05
        done
        sleep 0.1
        case "$RSQL_WORKFLOW_EXECUTION_ID" in
          *-3) echo '{HOSTILE}'; exit 3;;
        esac
        """,
    )


@pytest.fixture(scope="module")
def ran(emulator: Any, aws_module: Any, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    names = StackNames(f"rep{uuid.uuid4().hex[:8]}")
    assert cloud_main(["deploy", "--stack-name", names.stack_name]) == 0
    tmp = tmp_path_factory.mktemp("report")
    settings = settings_for(names, tmp, concurrency=4)
    marks = tmp / "marks"
    marks.mkdir()
    scripts(settings.script_dir, marks)
    workflow_id = "wf-report"
    config = {
        "workflow_id": workflow_id,
        "workflow_description": "report",
        "workflow_stages": [
            {"execution_flag": "y", "execution_type": "sequential", "scripts": SEQUENTIAL,
             "stage_description": "extract, then transform"},
            {"execution_flag": "y", "execution_type": "parallel", "scripts": PARALLEL,
             "stage_description": "load"},
        ],
    }  # fmt: skip
    path = tmp / "wf.json"
    path.write_text(json.dumps(config))
    stack_args = ["--stack-name", names.stack_name]
    assert cloud_main(["workflow", "put", str(path), *stack_args]) == 0
    with agent_thread(settings):
        for run in RUNS:
            start = ["workflow", "start", workflow_id, "--execution-id", run, "--wait"]
            code = cloud_main([*start, "--timeout", "60", *stack_args])
            assert code == (1 if run == FAILED_RUN else 0), run
    return Ran(
        names,
        workflow_id,
        {
            run: audit_row(
                aws_module,
                names.workflow_audit_table,
                workflow_execution_id=run,
                workflow_id=workflow_id,
            )
            for run in RUNS
        },
        {
            (run, job): audit_row(
                aws_module, names.job_audit_table, job_name=job, workflow_execution_id=run
            )
            for run in RUNS
            for job in JOBS
        },
    )


def settings_for(names: StackNames, directory: Path, **overrides: Any) -> Settings:
    """An agent of this stack, with its scripts, logs and state under `directory`."""
    stack = type(
        "S",
        (),
        {
            "activity_arn": f"arn:aws:states:us-east-1:123456789012:activity:{names.activity}",
            "table": names.job_audit_table,
            "log_group": names.log_group,
        },
    )
    return agent_settings(directory, stack, **overrides)  # type: ignore[arg-type]


def audit_row(aws: Any, table: str, **key: str) -> dict[str, Any]:
    item = aws.ddb.get_item(
        TableName=table,
        Key={name: {"S": value} for name, value in key.items()},
        ConsistentRead=True,
    )["Item"]
    return from_item(item)


@pytest.fixture(scope="module")
def aws_module(_aws_clients: Any) -> Any:
    return _aws_clients


def seconds(since: str, until: str) -> float:
    parse = dt.datetime.fromisoformat
    return (
        parse(until.replace("Z", "+00:00")) - parse(since.replace("Z", "+00:00"))
    ).total_seconds()


def console_url(names: StackNames, stream: str) -> str:
    """Written out as the console's address bar shows it, independently of the code."""
    encoded_group = names.log_group.replace("/", "$252F")
    return (
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
        f"#logsV2:log-groups/log-group/{encoded_group}/log-events/{stream.replace('/', '$252F')}"
    )


# -- the page in Chromium ------------------------------------------------------------------------

MEASURE = """JSON.stringify([...document.querySelectorAll('rect.bar')].map(bar => {
  const lane = bar.ownerSVGElement.getBoundingClientRect(), box = bar.getBoundingClientRect();
  const row = bar.closest('tr'), style = getComputedStyle(bar);
  return {job: bar.dataset.job, left: box.left - lane.left, width: box.width,
          lane: lane.width, fill: style.fill, stroke: style.stroke,
          stage: Number(bar.closest('tbody').dataset.stage), status: row.dataset.status,
          critical: row.dataset.critical, link: row.querySelector('td.name a')?.href ?? null,
          x: box.left + box.width / 2, y: box.top + box.height / 2,
          spark: row.querySelector('svg.sparkline').dataset.durationsMs,
          dots: row.querySelectorAll('svg.sparkline circle').length,
          delta: row.querySelector('td.delta').className};
}))"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with Chromium(tmp_path_factory.mktemp("chromium") / "profile") as chromium:
        yield chromium


def test_the_page_draws_every_job_as_its_audit_rows_say(
    ran: Ran, browser: Chromium, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page_file = tmp_path / "run.html"
    assert (
        cloud_main(["workflow", "report", FAILED_RUN, "--html", str(page_file), *ran.stack_args])
        == 0
    )
    assert "critical path: extract.sh -> transform.sh -> load_b.sh" in capsys.readouterr().out
    page = browser.open(page_file.as_uri())
    bars = {bar["job"]: bar for bar in json.loads(page.evaluate(MEASURE))}
    assert sorted(bars) == sorted(JOBS)

    run_row = ran.workflow_rows[FAILED_RUN]
    start = run_row["execution_start_ts"]
    rows = {job: ran.job_rows[(FAILED_RUN, job)] for job in JOBS}
    span_s = max(
        seconds(start, run_row["execution_end_ts"]),
        *(seconds(start, row["execution_end_ts"]) for row in rows.values()),
    )
    for job, row in rows.items():
        bar = bars[job]
        lane = bar["lane"]
        expected_left = seconds(start, row["execution_start_ts"]) / span_s * lane
        run_s = seconds(row["execution_start_ts"], row["execution_end_ts"])
        expected_width = max(run_s / span_s, MIN_BAR_PCT / 100) * lane
        assert abs(bar["left"] - expected_left) <= 1.5, (job, bar, row)
        assert abs(bar["width"] - expected_width) <= 1.5, (job, bar, row)
        assert bar["stage"] == row["stage_index"]
        assert bar["status"] == row["execution_status"]
        assert bar["fill"] == FILL[row["execution_status"]]
        # Only a job that printed something has a stream to link to.
        printed = job in ("extract.sh", "load_b.sh")
        assert bar["link"] == (console_url(ran.names, row["log_stream"]) if printed else None)
        # Durations of the last runs, oldest first, straight from each run's row.
        expected = [str(ran.job_rows[(run, job)]["duration_ms"]) for run in RUNS]
        assert bar["spark"].split(",") == expected and bar["dots"] == len(RUNS)
    assert rows["load_b.sh"]["execution_status"] == "Failed"
    critical = {job for job, bar in bars.items() if bar["critical"] == "true"}
    assert critical == {"extract.sh", "transform.sh", "load_b.sh"}
    assert bars["load_b.sh"]["stroke"] != bars["load_a.sh"]["stroke"]
    # transform.sh took 1.2 s this run against 0.3 s before: marked slower. Every job's mark
    # is what its own rows give: a loaded machine can stretch a 0.2 s job by a quarter too.
    assert "slower" in bars["transform.sh"]["delta"]
    for job in JOBS:
        *earlier, last = [ran.job_rows[(run, job)]["duration_ms"] for run in RUNS]
        ratio = last / statistics.median(earlier)
        slower, faster = ratio >= SLOWER_RATIO, ratio <= 1 / SLOWER_RATIO
        verdict = ["slower"] if slower else ["faster"] if faster else []
        assert bars[job]["delta"].split() == ["delta", *verdict], (job, ratio)

    check_cause_and_hover(page, rows["load_b.sh"], bars["load_b.sh"])
    # Nothing but the page itself was requested: no CDN, no font, no image.
    assert page.requested_urls() == [page_file.as_uri()]
    shot = tmp_path / "report.png"
    page.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if target := os.environ.get("RSQL_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, target)


def check_cause_and_hover(page: Any, row: dict[str, Any], bar: dict[str, Any]) -> None:
    """The failure cause is shown in full, as text; the hover box tells host, exit, attempts."""
    cause = page.evaluate(
        "document.querySelector('article[data-job=\"load_b.sh\"] pre').textContent"
    )
    assert cause == row["cause"] and HOSTILE in cause
    assert page.evaluate("document.scripts.length") == 1
    assert page.evaluate("document.querySelectorAll('b').length") == 0
    assert page.evaluate("document.title").startswith("wf-report")
    assert page.evaluate("document.getElementById('tip').hidden") is True
    page.hover(bar["x"], bar["y"])
    tip = page.evaluate(
        "document.getElementById('tip').hidden ? null : document.getElementById('tip').textContent"
    )
    assert tip is not None
    assert f"host: {row['instance_id']} ({row['worker_name']})" in tip
    assert "exit code: 3" in tip and "attempts: 1" in tip and "load_b.sh: Failed" in tip


# -- history and errors --------------------------------------------------------------------------


def test_history_lists_the_runs_newest_first(ran: Ran, capsys: pytest.CaptureFixture[str]) -> None:
    assert cloud_main(["workflow", "history", ran.workflow_id, "--json", *ran.stack_args]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["workflow_execution_id"] for r in runs] == list(reversed(RUNS))
    assert [r["execution_status"] for r in runs] == ["Failed", "Completed", "Completed"]
    assert [r["failed_jobs"] for r in runs] == [["load_b.sh"], [], []]
    for entry in runs:
        row = ran.workflow_rows[entry["workflow_execution_id"]]
        expected_ms = seconds(row["execution_start_ts"], row["execution_end_ts"]) * 1000
        assert abs(entry["duration_ms"] - expected_ms) <= 1
    assert runs[0]["error"] == "RSQL.ScriptFailed"

    assert (
        cloud_main(["workflow", "history", ran.workflow_id, "--limit", "2", *ran.stack_args]) == 0
    )
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == [
        "EXECUTION",
        "STATUS",
        "STARTED",
        "DURATION",
        "FAILED",
        "JOB",
        "ERROR",
    ]
    assert [line.split()[0] for line in lines[1:]] == [RUNS[2], RUNS[1]]
    assert "load_b.sh" in lines[1] and "RSQL.ScriptFailed" in lines[1]
    assert out.err == ""  # the index answered: no note about a scan


def test_report_and_history_of_what_does_not_exist_exit_1(
    ran: Ran, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page_file = tmp_path / "none.html"
    code = cloud_main(
        ["workflow", "report", "no-such-run", "--html", str(page_file), *ran.stack_args]
    )
    assert code == 1 and not page_file.exists()
    assert "no execution 'no-such-run'" in capsys.readouterr().err
    assert cloud_main(["workflow", "history", "no-such-workflow", *ran.stack_args]) == 1
    assert "no workflow 'no-such-workflow'" in capsys.readouterr().err


def test_a_stack_from_before_the_index_is_scanned_until_deploy_adds_it(
    aws: Any, uid: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = StackNames(f"old{uid}")
    stack_args = ["--stack-name", names.stack_name]
    assert cloud_main(["deploy", *stack_args]) == 0
    table = names.workflow_audit_table
    aws.ddb.update_table(
        TableName=table,
        GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "by_workflow_start"}}],
    )
    # Runs as the state machine records them, one of another workflow among them.
    for execution, workflow, start in (
        ("old-1", "wf-old", "2026-01-01T00:00:00.000Z"),
        ("other-1", "wf-other", "2026-01-02T00:00:00.000Z"),
        ("old-2", "wf-old", "2026-01-03T00:00:00.000Z"),
    ):
        aws.ddb.put_item(
            TableName=table,
            Item={
                "workflow_execution_id": {"S": execution},
                "workflow_id": {"S": workflow},
                "execution_status": {"S": "Completed"},
                "execution_start_ts": {"S": start},
                "execution_end_ts": {"S": start.replace("00.000Z", "42.000Z")},
                "rsql_jobs": {"L": [{"S": "a.sh"}]},
            },
        )
    capsys.readouterr()

    def history() -> tuple[list[str], str]:
        assert cloud_main(["workflow", "history", "wf-old", "--json", *stack_args]) == 0
        out = capsys.readouterr()
        return [r["workflow_execution_id"] for r in json.loads(out.out)], out.err

    runs, note = history()
    assert runs == ["old-2", "old-1"]
    assert "scanned" in note and f"rsql-cloud deploy --stack-name {names.stack_name}" in note
    page_file = tmp_path / "old.html"
    assert cloud_main(["workflow", "report", "old-2", "--html", str(page_file), *stack_args]) == 0
    assert "scanned" in capsys.readouterr().err
    assert 'data-durations-ms=","' in page_file.read_text()  # two runs, a.sh without a row

    assert cloud_main(["deploy", *stack_args]) == 0
    out = capsys.readouterr().out
    assert f"Creating index by_workflow_start of DynamoDB table: {table}" in out
    assert history() == (["old-2", "old-1"], "")
    assert cloud_main(["deploy", *stack_args]) == 0
    assert "No changes" in capsys.readouterr().out


def test_a_run_in_progress_is_drawn_up_to_now(
    ran: Ran, browser: Chromium, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job still running gets a bar from its start to the moment of the report."""
    settings = settings_for(ran.names, tmp_path)
    release, started = tmp_path / "release", tmp_path / "started"
    write_script(
        settings.script_dir,
        "hold.sh",
        f"touch {started}; for i in $(seq 1 600); do [ -e {release} ] && exit 0; sleep 0.05; done",
    )
    config = tmp_path / "hold.json"
    stage = {"execution_flag": "y", "execution_type": "sequential", "scripts": ["hold.sh"]}
    config.write_text(json.dumps({"workflow_id": "wf-hold", "workflow_stages": [stage]}))
    assert cloud_main(["workflow", "put", str(config), *ran.stack_args]) == 0
    page_file = tmp_path / "running.html"
    with agent_thread(settings):
        try:
            start = ["workflow", "start", "wf-hold", "--execution-id", "hold-run-1"]
            assert cloud_main([*start, *ran.stack_args]) == 0
            wait_for(started.exists, 30, "hold.sh to start")
            report = ["workflow", "report", "hold-run-1", "--html", str(page_file)]
            assert cloud_main([*report, *ran.stack_args]) == 0
        finally:
            release.touch()
        capsys.readouterr()
    page = browser.open(page_file.as_uri())
    assert page.evaluate("document.getElementById('run-status').textContent") == "Running"
    bar = json.loads(page.evaluate(MEASURE))[0]
    assert bar["job"] == "hold.sh" and bar["status"] == "Running"
    # The run so far is the job so far: its bar reaches (nearly) the end of the axis.
    assert bar["left"] + bar["width"] >= 0.5 * bar["lane"] and bar["width"] > 0
    assert "still running" in page.evaluate("document.querySelector('.facts').textContent")
