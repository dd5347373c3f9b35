"""`rsql-cloud demo`: the AWS sample's whole walkthrough, locally, in one command (what
`make demo` runs; needs the `[emulator]` extra).

It starts the emulator (`rsql-cloud emulator`), then runs the very commands an operator would
(`rsql-cloud deploy`, `workflow put`, `rsql-agent run`, `workflow start --wait`, `workflow
status`, `workflow logs`), printing each before it runs, then checks the outcome itself: the
workflow audit row Completed, six job rows Completed with exit code 0, log lines in CloudWatch,
and `rsql_blog.blog_table` holding 4 rows (queried with psql, connection and password file from
the emulator's env file). Exit 0 only if all of that holds. Everything it started is stopped on
the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent import schema
from agent.items import from_item, to_item
from cloud.emulator import missing_extra
from cloud.names import DEFAULT_STACK_NAME, STACK_NAME_ENV, StackNames

PROG = "rsql-cloud demo"
WORKFLOW_ID = "blog_test_workflow"
EXPECTED_ROWS = 4
SHOWN_LOG_JOB = "rsql_blog_script_3.sh"
WORKFLOW_TIMEOUT_S = 120
AGENT_STOP_TIMEOUT_S = 30
# How long a stopping agent may wait for its open polls before the second SIGTERM.
STOP_PATIENCE_S = 2
_REPO = Path(__file__).resolve().parent.parent


class DemoFailed(Exception):
    """A step of the walkthrough did not do what it should; the message says which."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the walkthrough; 0 only if every check held (1 without the `[emulator]` extra)."""
    options = _parser().parse_args(argv)
    problem = missing_extra()
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 1
    script_dir = _find_script_dir(options.script_dir)
    data_dir = Path(options.data_dir or tempfile.mkdtemp(prefix="rsql-demo-")).absolute()
    started = time.monotonic()
    names = StackNames(os.environ.get(STACK_NAME_ENV, DEFAULT_STACK_NAME))
    demo = Demo(data_dir=data_dir, script_dir=script_dir, names=names)
    try:
        with _terminate_on_sigterm():
            demo.run()
    except DemoFailed as exc:
        print(f"\nDEMO FAILED: {exc}\n(files kept in {data_dir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what the demo started", file=sys.stderr)
        return 130
    finally:
        demo.close()
    elapsed = time.monotonic() - started
    print(
        f"\nDemo passed in {elapsed:.1f} s: workflow Completed, 6 jobs Completed, "
        f"rsql_blog.blog_table holds {EXPECTED_ROWS} rows."
    )
    if options.keep or options.data_dir:
        print(f"Files (env file, agent log, job logs) kept in {data_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the AWS sample's walkthrough locally: emulator, deploy, put the sample "
        "workflow, start an agent, run the workflow, show audit rows, logs and the data. "
        "Needs the [emulator] extra.",
        epilog="example:\n  rsql-cloud demo --data-dir .demo   # keeps the env file and logs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", help="keep emulator data and logs here (default: a temp dir)")
    parser.add_argument("--script-dir", help="RSQL scripts (default: the repo's rsql_scripts)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir afterwards")
    return parser


def _find_script_dir(given: str | None) -> Path:
    for candidate in (given, _REPO / "rsql_scripts", Path.cwd() / "rsql_scripts"):
        if candidate and (Path(candidate) / f"{WORKFLOW_ID}.json").is_file():
            return Path(candidate).absolute()
    raise SystemExit(
        f"{PROG}: no rsql_scripts/{WORKFLOW_ID}.json found; run it from the repository "
        "or pass --script-dir"
    )


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    # A SIGTERM to the demo (CI, a terminal closing) cleans up like Ctrl-C does.
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Demo:
    data_dir: Path
    script_dir: Path
    names: StackNames
    env: dict[str, str] = field(default_factory=dict)
    execution_id: str = field(default_factory=lambda: time.strftime("demo-%Y%m%dT%H%M%S"))
    _emulator: Any = None
    _agent: subprocess.Popen[bytes] | None = None
    _agent_log: IO[bytes] | None = None

    def run(self) -> None:
        self._start_emulator()
        self._command("rsql-cloud", "deploy")
        self._command("rsql-cloud", "workflow", "put", str(self.script_dir / f"{WORKFLOW_ID}.json"))
        self._start_agent()
        self._command(
            "rsql-cloud", "workflow", "start", WORKFLOW_ID, "--execution-id", self.execution_id,
            "--wait", "--timeout", str(WORKFLOW_TIMEOUT_S),
        )  # fmt: skip
        self._command("rsql-cloud", "workflow", "status", self.execution_id)
        self._command("rsql-cloud", "workflow", "logs", self.execution_id, SHOWN_LOG_JOB)
        rows = self._validation_query()
        self._check_audit_rows()
        if rows != EXPECTED_ROWS:
            raise DemoFailed(f"rsql_blog.blog_table holds {rows} rows, expected {EXPECTED_ROWS}")

    def _start_emulator(self) -> None:
        from cloud.emulator.process import EmulatorProcess

        _banner("Starting the local emulator (moto + Step Functions + embedded PostgreSQL)")
        self._emulator = EmulatorProcess(
            self.data_dir / "emulator", script_dir=self.script_dir, stack_name=self.names.stack_name
        )
        self._emulator.start()
        self.env = {**os.environ, **self._emulator.env}
        print(f"emulator at {self._emulator.endpoint_url}; env file {self._emulator.env_file}")
        print(f"(to use it from another shell: set -a; . {self._emulator.env_file}; set +a)")

    def _start_agent(self) -> None:
        log_path = self.data_dir / "agent.log"
        _banner(f"$ rsql-agent run   (in the background; its JSON log goes to {log_path})")
        self._agent_log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self._agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._agent_log,
            stderr=subprocess.STDOUT,
        )

    def _command(self, program: str, *args: str) -> None:
        _banner("$ " + shlex.join([program, *args]))
        module = "cloud" if program == "rsql-cloud" else "agent"
        sys.stdout.flush()
        done = subprocess.run([sys.executable, "-m", module, *args], env=self.env, check=False)
        if done.returncode != 0:
            raise DemoFailed(f"`{program} {' '.join(args)}` exited with {done.returncode}")
        if self._agent is not None and self._agent.poll() is not None:
            raise DemoFailed(f"the agent exited early ({self._agent.returncode}); see agent.log")

    def _validation_query(self) -> int:
        sql = "select count(*) from rsql_blog.blog_table"
        _banner(f"$ \"$RSQL_BIN\" -c '{sql}'   (the AWS sample's validation query)")
        # The env file is enough: PG* name the server, PGPASSFILE its password file.
        done = subprocess.run(
            [self.env["RSQL_BIN"], "-X", "-tAc", sql],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise DemoFailed(f"the validation query failed: {done.stderr.strip()}")
        rows = int(done.stdout.strip())
        print(f" count\n-------\n {rows}\n(1 row)")
        return rows

    def _check_audit_rows(self) -> None:
        W, J = schema.WorkflowAudit, schema.JobAudit
        row = self._item(
            self.names.workflow_audit_table,
            {W.WORKFLOW_EXECUTION_ID: self.execution_id, W.WORKFLOW_ID: WORKFLOW_ID},
        )
        if row.get(W.EXECUTION_STATUS) != schema.COMPLETED:
            status = row.get(W.EXECUTION_STATUS)
            raise DemoFailed(f"workflow audit row status is {status!r}, expected Completed")
        jobs = row[W.RSQL_JOBS]
        for job in jobs:
            item = self._item(
                self.names.job_audit_table,
                {J.JOB_NAME: job, J.WORKFLOW_EXECUTION_ID: self.execution_id},
            )
            job_status, exit_code = item.get(J.EXECUTION_STATUS), item.get(J.EXIT_CODE)
            if job_status != schema.COMPLETED or exit_code != 0:
                raise DemoFailed(f"job {job}: status {job_status!r}, exit code {exit_code}")
        if len(jobs) != 6:
            raise DemoFailed(f"the workflow audit row lists {len(jobs)} jobs, expected 6")
        stream = schema.log_stream_name(WORKFLOW_ID, self.execution_id, SHOWN_LOG_JOB, 1)
        events = self._client("logs").get_log_events(
            logGroupName=self.names.log_group, logStreamName=stream, startFromHead=True
        )["events"]
        if not events:
            raise DemoFailed(f"log stream {stream} has no lines")

    def _item(self, table: str, key: dict[str, str]) -> dict[str, Any]:
        """One item as plain values ({} when there is none)."""
        answer = self._client("dynamodb").get_item(TableName=table, Key=to_item(key))
        return from_item(answer.get("Item", {}))

    def _client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def close(self) -> None:
        """Stop the agent, then the emulator; bounded."""
        if self._agent is not None and self._agent.poll() is None:
            stop_agent(self._agent, AGENT_STOP_TIMEOUT_S)
        if self._agent_log is not None:
            self._agent_log.close()
        if self._emulator is not None:
            self._emulator.stop()


def stop_agent(agent: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM an agent whose work is done; it drains, which includes waiting for its open
    long polls to return (up to a minute), so after a moment a second SIGTERM tells it to
    stop at once. SIGKILL after `timeout_s`."""
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(STOP_PATIENCE_S)
        return
    except subprocess.TimeoutExpired:
        agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout_s)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def _banner(text: str) -> None:
    print(f"\n\033[1m{text}\033[0m" if sys.stdout.isatty() else f"\n{text}", flush=True)
