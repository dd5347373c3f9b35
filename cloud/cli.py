"""`rsql-cloud`: deploy the cloud side of rsql-agent and drive its workflows.

Each command is a small function from parsed arguments to an exit code; the logic lives in
`deploy.py` and `workflow.py`. Mistakes an operator can fix are printed as one line on
stderr with a non-zero exit, never a traceback (set RSQL_CLOUD_DEBUG=1 to see one).
Exit codes: 0 done, 1 failed (or the watched run did not succeed), 2 bad usage,
124 `--wait --timeout` ran out, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cloud.names import DEFAULT_SECRET_ID, DEFAULT_STACK_NAME, StackNames

if TYPE_CHECKING:
    from cloud.aws import Aws
    from cloud.workflow import RunStatus, Stack

PROG: Final = "rsql-cloud"
EXIT_FAILED: Final = 1
EXIT_TIMEOUT: Final = 124
EXIT_INTERRUPTED: Final = 130
EXIT_BROKEN_PIPE: Final = 141
STACK_ENV: Final = "RSQL_STACK_NAME"
DEBUG_ENV: Final = "RSQL_CLOUD_DEBUG"

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulator"]:
        # The emulator has its own options and needs the [emulator] extra: only load it when
        # asked for (without the extra it says in one line what to install).
        from cloud.emulator.cli import main as emulator_main

        return emulator_main(args_list[1:])
    if args_list[:1] == ["demo"]:
        from cloud.demo import main as demo_main

        return demo_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    if getattr(args, "timeout", None) is not None and not args.wait:
        parser.error("workflow start: --timeout only applies with --wait")
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `rsql-cloud workflow logs X | head`: the reader has gone; so does the rest of output.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        message = _explain(exc)
        if message is None:
            raise
        for line in message.splitlines():
            print(f"{PROG}: {line}", file=sys.stderr)
        return EXIT_FAILED


def _explain(exc: Exception) -> str | None:
    """One line for errors a user meets (bad input, no stack, no endpoint); None for bugs."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        WaiterError,
    )

    from cloud.aws import CloudError

    if isinstance(exc, CloudError):
        return str(exc)
    if isinstance(exc, NoCredentialsError):
        return (
            "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID "
            "(emulator: `set -a; . ENV_FILE; set +a`)"
        )
    if isinstance(exc, NoRegionError):
        return "no AWS region configured: set AWS_REGION (e.g. us-east-1)"
    if isinstance(exc, EndpointConnectionError):
        endpoint = exc.kwargs.get("endpoint_url")
        return f"cannot reach {endpoint}: is the endpoint (or the emulator) running?"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"AWS refused {exc.operation_name}: {error.get('Code')}: {error.get('Message')}"
    if isinstance(exc, WaiterError):
        return f"gave up waiting: {exc}"
    return None


# -- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deploy the cloud side of rsql-agent (DynamoDB tables, Step Functions\n"
        "activity and state machine, IAM role, log group, SNS topic) and run RSQL workflows.\n"
        "AWS endpoint, region and credentials come from the standard AWS_* variables.",
        epilog="Quick start on the local emulator:\n"
        "  rsql-cloud emulator --data-dir .emu &    # then: set -a; . .emu/env; set +a\n"
        "  rsql-cloud deploy\n"
        "  rsql-cloud workflow put rsql_scripts/blog_test_workflow.json\n"
        "  rsql-cloud workflow start blog_test_workflow --wait\n"
        "Exit codes: 0 ok, 1 failed, 2 usage, 124 --wait timed out, 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_deploy(commands)
    _add_destroy(commands)
    _add_workflow(commands)
    _add_iam(commands)
    commands.add_parser(
        "emulator",
        help="run the local emulator (moto + Step Functions + PostgreSQL); see `emulator --help`",
        add_help=False,
    )
    commands.add_parser(
        "demo",
        help="the AWS sample's walkthrough on the local emulator (make demo); see `demo --help`",
        add_help=False,
    )
    return parser


def _command(
    commands: Any, name: str, handler: Handler, summary: str, example: str
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument(
        "--stack-name",
        type=_stack_names,
        default=os.environ.get(STACK_ENV, DEFAULT_STACK_NAME),
        metavar="NAME",
        help=f"the stack every resource name derives from (default: ${STACK_ENV} or "
        f"{DEFAULT_STACK_NAME!r})",
    )
    sub.set_defaults(handler=handler)
    return sub


def _stack_names(value: str) -> StackNames:
    try:
        return StackNames(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_deploy(commands: Any) -> None:
    sub = _command(
        commands,
        "deploy",
        _deploy,
        "create or update the stack; a second run changes nothing and says so",
        "rsql-cloud deploy --stack-name rsql --dry-run",
    )
    sub.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sub.add_argument(
        "--json", action="store_true", help="print the names and ARNs as JSON on stdout"
    )


def _add_destroy(commands: Any) -> None:
    sub = _command(
        commands,
        "destroy",
        _destroy,
        "delete the stack's state machine, activity, role, topic and log group (tables stay)",
        "rsql-cloud destroy --stack-name test1 --purge --yes",
    )
    sub.add_argument("--purge", action="store_true", help="delete the three tables too")
    sub.add_argument("--yes", action="store_true", help="do not ask (required when not on a tty)")
    sub.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")


def _add_workflow(commands: Any) -> None:
    workflow = commands.add_parser("workflow", help="put, start and inspect workflows")
    verbs = workflow.add_subparsers(title="workflow commands", metavar="VERB", required=True)
    put = _command(
        verbs,
        "put",
        _put,
        "validate a workflow config file (the AWS sample's item as JSON) and store it",
        "rsql-cloud workflow put rsql_scripts/blog_test_workflow.json",
    )
    put.add_argument("file", type=Path, metavar="FILE.json")
    check = _command(
        verbs,
        "validate",
        _validate,
        "only validate a workflow config file (no AWS calls)",
        "rsql-cloud workflow validate rsql_scripts/blog_test_workflow.json",
    )
    check.add_argument("file", type=Path, metavar="FILE.json")
    start = _command(
        verbs,
        "start",
        _start,
        "start a run of a workflow; with --wait, watch it until it ends",
        "rsql-cloud workflow start blog_test_workflow --wait --timeout 3600",
    )
    start.add_argument("workflow_id", metavar="WORKFLOW_ID")
    start.add_argument(
        "--execution-id",
        metavar="ID",
        help="the execution name (default: WORKFLOW_ID-<UTC time>-<4 hex>)",
    )
    start.add_argument(
        "--restart-of",
        metavar="EXEC_ID",
        help="restart a failed run: jobs that completed in it are recorded as Skipped",
    )
    start.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the run ends; exit 0 if it succeeded",
    )
    start.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="S",
        help="with --wait: stop watching after S seconds (exit 124)",
    )
    status = _command(
        verbs,
        "status",
        _status,
        "show a run's workflow audit row and every job's row",
        "rsql-cloud workflow status blog_test_workflow-20261127T080102-1a2b --json",
    )
    status.add_argument("execution_id", metavar="EXECUTION_ID")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    logs = _command(
        verbs,
        "logs",
        _logs,
        "print a run's CloudWatch log lines: of one job, or of all (prefixed with the job)",
        "rsql-cloud workflow logs blog_test_workflow-20261127T080102-1a2b rsql_blog_script_3.sh",
    )
    logs.add_argument("execution_id", metavar="EXECUTION_ID")
    logs.add_argument("job", nargs="?", metavar="JOB", help="only this job's lines")
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new lines until the run ends"
    )


def _add_iam(commands: Any) -> None:
    iam_parser = commands.add_parser("iam", help="IAM policy documents for operators")
    verbs = iam_parser.add_subparsers(title="iam commands", metavar="VERB", required=True)
    policy = _command(
        verbs,
        "agent-policy",
        _agent_policy,
        "print the least-privilege policy for the agent hosts' instance role, as JSON",
        "rsql-cloud iam agent-policy --secret-id rsql/redshift > agent-policy.json",
    )
    policy.add_argument(
        "--secret-id",
        default=os.environ.get("RSQL_AGENT_SECRET_ID", DEFAULT_SECRET_ID),
        help="the Redshift connection secret "
        f"(default: $RSQL_AGENT_SECRET_ID or {DEFAULT_SECRET_ID})",
    )


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return seconds


# -- the commands --------------------------------------------------------------------------------


def _aws() -> Aws:
    from cloud.aws import Aws

    return Aws()


def _stack(args: argparse.Namespace) -> Stack:
    from cloud.workflow import Stack

    return Stack(_aws(), args.stack_name)


def _deploy(args: argparse.Namespace) -> int:
    from cloud import deploy

    names: StackNames = args.stack_name
    # With --json, stdout carries only the JSON document.
    say = _stderr if args.json else print
    if args.dry_run:
        say(f"Plan for stack {names.stack_name} (dry run, nothing is changed):")
    plan, outputs = deploy.deploy(_aws(), names, dry_run=args.dry_run, say=say)
    if args.dry_run:
        for step in plan:
            say(f"  {step.message}")
    if not plan:
        say(f"No changes: stack {names.stack_name} is up to date.")
    if args.json:
        print(json.dumps(outputs.to_dict(), indent=2))
    elif not args.dry_run:
        print(f"Stack {names.stack_name}:")
        for key, value in outputs.to_dict().items():
            print(f"  {key:<22}{value}")
    return 0


def _destroy(args: argparse.Namespace) -> int:
    from cloud import deploy

    names: StackNames = args.stack_name
    aws = _aws()
    plan = deploy.destroy(aws, names, purge=args.purge, dry_run=True)
    if not plan:
        print(f"Nothing to delete for stack {names.stack_name}.")
        return 0
    kept = "" if args.purge else " (tables are kept; --purge deletes them too)"
    print(f"Destroying stack {names.stack_name}{kept}:")
    for step in plan:
        print(f"  {step.message}")
    if args.dry_run:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            from cloud.aws import CloudError

            raise CloudError("refusing to delete without --yes when stdin is not a terminal")
        if input("Delete these? [y/N] ").strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return EXIT_FAILED
    deploy.execute(aws, plan, lambda message: None)
    print(f"Stack {names.stack_name} destroyed.")
    return 0


def _put(args: argparse.Namespace) -> int:
    from cloud.workflow import put_workflow

    stack = _stack(args)
    result = put_workflow(stack, args.file)
    workflow = result.workflow
    verb = "Created" if result.created else "Updated"
    print(
        f"{verb} workflow {workflow.workflow_id} ({len(workflow.workflow_stages)} stages, "
        f"{len(workflow.job_names)} jobs) in table {stack.names.config_table}."
    )
    if result.running_execution_id:
        _stderr(
            f"note: workflow {workflow.workflow_id} is running as execution "
            f"{result.running_execution_id}; the change applies from its next run"
        )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from cloud.config import load_workflow_file

    workflow = load_workflow_file(args.file)
    print(
        f"{args.file}: valid workflow {workflow.workflow_id} ({len(workflow.workflow_stages)} "
        f"stages, {len(workflow.job_names)} jobs)"
    )
    return 0


def _start(args: argparse.Namespace) -> int:
    from cloud.workflow import ProgressView, start_workflow, wait_for_run

    stack = _stack(args)
    started = start_workflow(
        stack, args.workflow_id, execution_id=args.execution_id, restart_of=args.restart_of
    )
    for note in started.notes:
        _stderr(f"note: {note}")
    print(f"Started execution {started.execution_name} of workflow {args.workflow_id}")
    if not args.wait:
        print(f"  follow it: rsql-cloud workflow status {started.execution_name}{stack.stack_flag}")
        return 0
    tty = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    size = shutil.get_terminal_size()
    view = ProgressView(_write_stdout, tty=tty, width=size.columns, height=size.lines)
    try:
        result = wait_for_run(
            stack, started.workflow, started.execution_name, view, timeout_s=args.timeout
        )
    except KeyboardInterrupt:
        _stderr(f"stopped watching; execution {started.execution_name} keeps running")
        return EXIT_INTERRUPTED
    if result.described is None:
        _stderr(
            f"{PROG}: still running after {args.timeout:g} s; execution "
            f"{started.execution_name} goes on (see `rsql-cloud workflow status "
            f"{started.execution_name}{stack.stack_flag}`)"
        )
        return EXIT_TIMEOUT
    status = result.described["status"]
    if status == "SUCCEEDED":
        print(f"Execution {started.execution_name} SUCCEEDED")
        return 0
    _stderr(f"{PROG}: execution {started.execution_name} {status}")
    if result.described.get("error"):
        _stderr(f"  error: {result.described['error']}")
    if result.described.get("cause"):
        _stderr("  cause: " + str(result.described["cause"]).replace("\n", "\n         "))
    return EXIT_FAILED


def _status(args: argparse.Namespace) -> int:
    from cloud.workflow import run_status

    report = run_status(_stack(args), args.execution_id)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_status(report)
    return 0


def _print_status(report: RunStatus) -> None:
    from agent.schema import JobAudit as J
    from agent.schema import WorkflowAudit as W
    from cloud.workflow import format_duration

    row = report.workflow_row or {}
    execution = report.to_dict()["execution"] or {}
    print(f"Execution   {report.execution_name}   (workflow {report.workflow_id})")
    sfn_status = f"   (Step Functions: {execution['status']})" if execution else ""
    print(f"Status      {row.get(W.EXECUTION_STATUS, '-')}{sfn_status}")
    print(f"Started     {row.get(W.EXECUTION_START_TS) or execution.get('start_date') or '-'}")
    print(f"Ended       {row.get(W.EXECUTION_END_TS) or execution.get('stop_date') or '-'}")
    if row.get(W.RESTART_OF):
        print(f"Restart of  {row[W.RESTART_OF]}")
    for label, key in (("Error", W.ERROR), ("Cause", W.CAUSE)):
        value = row.get(key) or execution.get(key)
        if value:
            print(f"{label:<12}" + str(value).replace("\n", "\n" + " " * 12))
    headers = ["STAGE", "JOB", "STATUS", "EXIT", "DURATION", "ATTEMPT", "INSTANCE", "STARTED"]
    table = [headers]
    for job in report.jobs:
        duration = job.row.get(J.DURATION_MS)
        table.append(
            [
                "-" if job.stage_index is None else str(job.stage_index + 1),
                job.job_name,
                job.status,
                str(job.row.get(J.EXIT_CODE, "-")),
                format_duration(duration / 1000) if isinstance(duration, int | float) else "-",
                str(job.row.get(J.ATTEMPT, "-")),
                str(job.row.get(J.INSTANCE_ID, "-")),
                str(job.row.get(J.EXECUTION_START_TS, "-")),
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    print()
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _logs(args: argparse.Namespace) -> int:
    from cloud.workflow import print_logs

    print_logs(_stack(args), args.execution_id, args.job, print, follow=args.follow)
    return 0


def _agent_policy(args: argparse.Namespace) -> int:
    from cloud.iam import agent_policy

    print(json.dumps(agent_policy(args.stack_name, _aws().account, args.secret_id), indent=2))
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
