"""`rsql-cloud`: deploy the cloud side of rsql-agent and drive its workflows.

This module is the parser and the error handling; each command is a function in `commands.py`
from parsed arguments to an exit code. Mistakes an operator can fix are printed as one line on
stderr with a non-zero exit, never a traceback (set RSQL_CLOUD_DEBUG=1 to see one).
Exit codes: 0 done, 1 failed (or the watched run did not succeed), 2 bad usage,
124 `--wait --timeout` ran out, 130 interrupted, 141 stdout closed early (broken pipe).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from cloud import commands as handlers
from cloud.commands import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, PROG
from cloud.names import DEFAULT_SECRET_ID, add_stack_name_option

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
        epilog="exit codes: 0 ok, 1 failed, 2 usage, 124 --wait timed out, 130 interrupted,\n"
        "  141 stdout closed early (broken pipe, e.g. `| head`)\n"
        "\n"
        "examples (a quick start on the local emulator):\n"
        "  rsql-cloud emulator --data-dir .emu &    # then: set -a; . .emu/env; set +a\n"
        "  rsql-cloud deploy\n"
        "  rsql-cloud workflow put rsql_scripts/blog_test_workflow.json\n"
        "  rsql-cloud workflow start blog_test_workflow --wait",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_deploy(commands)
    _add_destroy(commands)
    _add_workflow(commands)
    _add_fleet(commands)
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


def _parser(commands: Any, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    """A (sub)command's parser: its help ends with an example."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _group(commands: Any, name: str, summary: str, example: str) -> Any:
    """A command with verbs of its own (`workflow`, `iam`); returns where the verbs go."""
    group = _parser(commands, name, summary, example)
    return group.add_subparsers(title=f"{name} commands", metavar="VERB", required=True)


def _command(
    commands: Any, name: str, handler: Handler, summary: str, example: str
) -> argparse.ArgumentParser:
    sub = _parser(commands, name, summary, example)
    add_stack_name_option(sub, "the stack every resource name derives from")
    sub.set_defaults(handler=handler)
    return sub


def _add_deploy(commands: Any) -> None:
    sub = _command(
        commands,
        "deploy",
        handlers.deploy,
        "create or update the stack; a second run changes nothing and says so",
        "rsql-cloud deploy --stack-name rsql --alarms ops@example.com --dry-run",
    )
    sub.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sub.add_argument(
        "--json", action="store_true", help="print the names and ARNs as JSON on stdout"
    )
    sub.add_argument(
        "--alarms",
        metavar="EMAIL_OR_TOPIC",
        help="also create the alarms (failed workflow, tasks waiting, no agent polling) and "
        "the dashboard; notify this SNS topic ARN, or this address (subscribed to a topic "
        "<stack>-alarms; confirm the mail SNS sends). Without it, alarms are left as they are",
    )
    sub.add_argument(
        "--wait-alarm-minutes",
        type=int,
        default=15,
        metavar="N",
        help="with --alarms: alarm when a job waited longer than N minutes for a host (default 15)",
    )


def _add_destroy(commands: Any) -> None:
    sub = _command(
        commands,
        "destroy",
        handlers.destroy,
        "delete the stack's state machine, activity, role, topic and log group (tables stay)",
        "rsql-cloud destroy --stack-name test1 --purge --yes",
    )
    sub.add_argument("--purge", action="store_true", help="delete the three tables too")
    sub.add_argument("--yes", action="store_true", help="do not ask (required when not on a tty)")
    sub.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")


def _add_workflow(commands: Any) -> None:
    verbs = _group(
        commands,
        "workflow",
        "put, start and inspect workflows",
        "rsql-cloud workflow start blog_test_workflow --wait",
    )
    put = _command(
        verbs,
        "put",
        handlers.put,
        "validate a workflow config file (the AWS sample's item as JSON) and store it; "
        "create, update or delete its schedule to match",
        "rsql-cloud workflow put rsql_scripts/blog_test_workflow.json",
    )
    put.add_argument("file", type=Path, metavar="FILE.json")
    check = _command(
        verbs,
        "validate",
        handlers.validate,
        "validate a workflow config file and show what it asks of AWS's limits (no AWS calls)",
        "rsql-cloud workflow validate rsql_scripts/blog_test_workflow.json",
    )
    check.add_argument("file", type=Path, metavar="FILE.json")
    _add_start(verbs)
    _add_status(verbs)
    _add_logs(verbs)
    _add_report(verbs)
    _add_history(verbs)
    listing = _command(
        verbs,
        "list",
        handlers.list_workflows,
        "list every workflow with its schedule, next run, and last run's status and time",
        "rsql-cloud workflow list --json",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_start(verbs: Any) -> None:
    start = _command(
        verbs,
        "start",
        handlers.start,
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


def _add_status(verbs: Any) -> None:
    status = _command(
        verbs,
        "status",
        handlers.status,
        "show a run's workflow audit row and every job's row",
        "rsql-cloud workflow status blog_test_workflow-20261127T080102-1a2b --json",
    )
    status.add_argument("execution_id", metavar="EXECUTION_ID")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_logs(verbs: Any) -> None:
    logs = _command(
        verbs,
        "logs",
        handlers.logs,
        "print a run's CloudWatch log lines: of one job, or of all (prefixed with the job)",
        "rsql-cloud workflow logs blog_test_workflow-20261127T080102-1a2b rsql_blog_script_3.sh",
    )
    logs.add_argument("execution_id", metavar="EXECUTION_ID")
    logs.add_argument("job", nargs="?", metavar="JOB", help="only this job's lines")
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new lines until the run ends"
    )


def _add_report(verbs: Any) -> None:
    report = _command(
        verbs,
        "report",
        handlers.report,
        "write one run as a self-contained HTML page: a timeline of its jobs by stage, the "
        "critical path, log links, failure causes, each job's duration over the last runs",
        "rsql-cloud workflow report blog_test_workflow-20261127T080102-1a2b --html run.html",
    )
    report.add_argument("execution_id", metavar="EXECUTION_ID")
    report.add_argument(
        "--html", type=Path, required=True, metavar="FILE", help="the page to write"
    )
    report.add_argument(
        "--runs",
        type=_count,
        default=20,
        metavar="N",
        help="how many of the workflow's runs (up to this one) the sparklines show (default 20)",
    )


def _add_history(verbs: Any) -> None:
    history = _command(
        verbs,
        "history",
        handlers.history,
        "list a workflow's runs, newest first: status, start, duration, the job that failed",
        "rsql-cloud workflow history blog_test_workflow --limit 5",
    )
    history.add_argument("workflow_id", metavar="WORKFLOW_ID")
    history.add_argument(
        "--limit", type=_count, default=20, metavar="N", help="at most N runs (default 20)"
    )
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_fleet(commands: Any) -> None:
    from cloud.cli_fleet import add_fleet

    add_fleet(commands, _group, _command)


def _add_iam(commands: Any) -> None:
    verbs = _group(
        commands,
        "iam",
        "IAM policy documents for operators",
        "rsql-cloud iam agent-policy --secret-id rsql/redshift > agent-policy.json",
    )
    policy = _command(
        verbs,
        "agent-policy",
        handlers.agent_policy,
        "print the least-privilege policy for the agent hosts' instance role, as JSON",
        "rsql-cloud iam agent-policy --secret-id rsql/redshift > agent-policy.json",
    )
    policy.add_argument(
        "--secret-id",
        default=os.environ.get("RSQL_AGENT_SECRET_ID", DEFAULT_SECRET_ID),
        help="the Redshift connection secret "
        f"(default: $RSQL_AGENT_SECRET_ID or {DEFAULT_SECRET_ID})",
    )


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 1 <= count <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1 to 1000, got {value}")
    return count


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return seconds
