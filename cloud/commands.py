"""What each `rsql-cloud` command does once its arguments are parsed: a function from the
parsed arguments to an exit code. The work itself lives in `deploy`, `runs`, `reports`,
`logs`, `progress`, `history` and `report`; these functions print what it did.

Each handler imports what it needs when it runs: boto3 and pydantic take a second to load,
and `rsql-cloud --help` (or a typo) should not wait for them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cloud.aws import Aws
    from cloud.config import Workflow
    from cloud.resources import Instruction
    from cloud.stack import Stack

PROG: Final = "rsql-cloud"
EXIT_FAILED: Final = 1
EXIT_TIMEOUT: Final = 124
EXIT_INTERRUPTED: Final = 130
EXIT_BROKEN_PIPE: Final = 141


def _aws() -> Aws:
    from cloud.aws import Aws

    return Aws()


def _stack(args: argparse.Namespace) -> Stack:
    from cloud.stack import Stack

    return Stack(_aws(), args.stack_name)


def deploy(args: argparse.Namespace) -> int:
    """`deploy`: plan, then apply (or only print the plan with --dry-run)."""
    from cloud import deploy as deployment
    from cloud.monitoring import Alarming
    from cloud.names import StackNames

    names: StackNames = args.stack_name
    alarming = None
    if args.alarms is not None:
        alarming = Alarming.parse(args.alarms, args.wait_alarm_minutes)
    # With --json, stdout carries only the JSON document.
    say = _stderr if args.json else print
    if args.dry_run:
        say(f"Plan for stack {names.stack_name} (dry run, nothing is changed):")
    plan, outputs = deployment.deploy(
        _aws(), names, alarming=alarming, dry_run=args.dry_run, say=say
    )
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


def destroy(args: argparse.Namespace) -> int:
    """`destroy`: print what would be deleted, ask (or take --yes), delete."""
    from cloud import deploy as deployment
    from cloud.aws import CloudError
    from cloud.names import StackNames

    names: StackNames = args.stack_name
    aws = _aws()
    from cloud.remote import AwsRemoteState

    if AwsRemoteState(aws).autoscaling_group(names.autoscaling_group) is not None:
        raise CloudError(
            f"stack {names.stack_name} still has its fleet {names.autoscaling_group}: "
            f"delete it first (rsql-cloud fleet destroy --stack-name {names.stack_name})"
        )
    plan = deployment.destroy(aws, names, purge=args.purge, dry_run=True)
    if not plan:
        print(f"Nothing to delete for stack {names.stack_name}.")
        return 0
    kept = "" if args.purge else " (tables are kept; --purge deletes them too)"
    heading = f"Destroying stack {names.stack_name}{kept}:"
    if (code := confirm_deletion(heading, plan, args)) is not None:
        return code
    deployment.execute(aws, plan, lambda message: None)
    print(f"Stack {names.stack_name} destroyed.")
    return 0


def confirm_deletion(heading: str, plan: list[Instruction], args: argparse.Namespace) -> int | None:
    """Print what would be deleted; None to go on, else the exit code to stop with (--dry-run,
    or the operator said no). Off a terminal, --yes is required."""
    from cloud.aws import CloudError

    print(heading)
    for step in plan:
        print(f"  {step.message}")
    if args.dry_run:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise CloudError("refusing to delete without --yes when stdin is not a terminal")
        if input("Delete these? [y/N] ").strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return EXIT_FAILED
    return None


def put(args: argparse.Namespace) -> int:
    """`workflow put`: validate a config file, store it, keep its schedule in step."""
    from cloud.plan import CHILDREN, plan_workflow
    from cloud.runs import put_workflow
    from cloud.sizing import describe_plan
    from cloud.workflow_schedules import sync_schedule

    stack = _stack(args)
    result = put_workflow(stack, args.file)
    workflow = result.workflow
    verb = "Created" if result.created else "Updated"
    print(
        f"{verb} workflow {workflow.workflow_id} ({len(workflow.workflow_stages)} stages, "
        f"{len(workflow.job_names)} jobs) in table {stack.names.config_table}."
    )
    # The stages that run unlike a small workflow's: in child executions.
    for index, (stage, plan) in enumerate(
        zip(workflow.workflow_stages, plan_workflow(workflow), strict=True)
    ):
        if stage.enabled and plan.mode == CHILDREN:
            print(f"  stage {index + 1}: {describe_plan(stage.execution_type, plan)}")
    change = sync_schedule(stack, workflow)
    if change is not None:
        timezone = f" ({workflow.schedule.timezone})" if workflow.schedule else ""
        print(
            f"{change.change.capitalize()} schedule {change.name} {change.expression}{timezone} "
            f"in group {stack.names.schedule_group}."
        )
    if result.running_execution_id:
        _stderr(
            f"note: workflow {workflow.workflow_id} is running as execution "
            f"{result.running_execution_id}; the change applies from its next run"
        )
    return 0


def validate(args: argparse.Namespace) -> int:
    """`workflow validate`: validate a config file, and say what it asks of AWS's limits."""
    from cloud.config import ConfigError, load_workflow_file
    from cloud.sizing import report_lines, size_report

    workflow = load_workflow_file(args.file, within_limits=False)
    report = size_report(workflow)
    verdict = "workflow" if report.problems else "valid workflow"
    print(
        f"{args.file}: {verdict} {workflow.workflow_id} ({len(workflow.workflow_stages)} "
        f"stages, {report.jobs} jobs)"
    )
    if workflow.schedule is not None:
        print(f"  schedule: {_schedule_summary(workflow)}")
    for line in report_lines(workflow, report):
        print(line)
    for note in report.notes:
        _stderr(f"note: {note}")
    if report.problems:
        raise ConfigError(str(args.file), report.problems)
    return 0


def _schedule_summary(workflow: Workflow) -> str:
    """`cron(0 2 * * ? *) in Europe/Berlin, next run 2026-11-29T01:00:00Z`."""
    import datetime as dt

    from cloud import schedule_expressions

    schedule = workflow.schedule
    assert schedule is not None
    expression = schedule_expressions.parse(schedule.expression)
    now = dt.datetime.now(dt.UTC)
    moment = schedule_expressions.next_run(expression, schedule.timezone, now, start=now)
    following = moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "none (it is in the past)"
    state = "" if schedule.enabled else " (disabled)"
    return f"{schedule.expression} in {schedule.timezone}{state}, next run {following}"


def start(args: argparse.Namespace) -> int:
    """`workflow start`: start a run; with --wait, watch it and exit with how it ended."""
    from cloud.runs import start_workflow

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
    return _watch(stack, started.workflow, started.execution_name, args.timeout)


def _watch(stack: Stack, workflow: Workflow, execution_name: str, timeout_s: float | None) -> int:
    from cloud.progress import ProgressView, wait_for_run

    tty = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    size = shutil.get_terminal_size()
    view = ProgressView(_write_stdout, tty=tty, width=size.columns, height=size.lines)
    try:
        result = wait_for_run(stack, workflow, execution_name, view, timeout_s=timeout_s)
    except KeyboardInterrupt:
        _stderr(f"stopped watching; execution {execution_name} keeps running")
        return EXIT_INTERRUPTED
    if result.described is None:
        _stderr(
            f"{PROG}: still running after {timeout_s:g} s; execution {execution_name} goes on "
            f"(see `rsql-cloud workflow status {execution_name}{stack.stack_flag}`)"
        )
        return EXIT_TIMEOUT
    status = result.described["status"]
    if status == "SUCCEEDED":
        print(f"Execution {execution_name} SUCCEEDED")
        return 0
    _stderr(f"{PROG}: execution {execution_name} {status}")
    if result.described.get("error"):
        _stderr(f"  error: {result.described['error']}")
    if result.described.get("cause"):
        _stderr("  cause: " + str(result.described["cause"]).replace("\n", "\n         "))
    return EXIT_FAILED


def status(args: argparse.Namespace) -> int:
    """`workflow status`: a run's audit rows, as a table or as JSON."""
    from cloud.reports import run_status, status_lines

    report = run_status(_stack(args), args.execution_id)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        for line in status_lines(report):
            print(line)
    return 0


def list_workflows(args: argparse.Namespace) -> int:
    """`workflow list`: every workflow, its schedule and next run, its last run."""
    from cloud.listing import list_lines, list_workflows

    workflows = list_workflows(_stack(args), note=_note)
    if args.json:
        print(json.dumps([line.to_dict() for line in workflows], indent=2))
    elif not workflows:
        print("No workflows: put one with `rsql-cloud workflow put FILE.json`.")
    else:
        for line in list_lines(workflows):
            print(line)
    return 0


def logs(args: argparse.Namespace) -> int:
    """`workflow logs`: a run's CloudWatch lines, optionally following them."""
    from cloud.logs import print_logs

    print_logs(_stack(args), args.execution_id, args.job, print, follow=args.follow)
    return 0


def report(args: argparse.Namespace) -> int:
    """`workflow report`: one run as a self-contained HTML page."""
    from cloud.report import build_report
    from cloud.report_html import render

    built = build_report(_stack(args), args.execution_id, runs=args.runs, note=_note)
    target: Path = args.html
    # Written beside the target, then renamed: a reader never sees half a page.
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(render(built), encoding="utf-8")
    partial.replace(target)
    path = " -> ".join(built.critical_path) or "-"
    print(f"Wrote {target}: {len(built.jobs)} jobs of {built.execution_id} ({built.status})")
    print(f"  critical path: {path}")
    return 0


def history(args: argparse.Namespace) -> int:
    """`workflow history`: a workflow's runs, newest first."""
    from cloud.history import history_dicts, history_lines, runs_or_error

    runs, failed = runs_or_error(_stack(args), args.workflow_id, args.limit, note=_note)
    if args.json:
        print(json.dumps(history_dicts(runs, failed), indent=2))
    elif not runs:
        print(f"No runs of workflow {args.workflow_id} yet.")
    else:
        for line in history_lines(runs, failed):
            print(line)
    return 0


def _note(message: str) -> None:
    _stderr(f"note: {message}")


def agent_policy(args: argparse.Namespace) -> int:
    """`iam agent-policy`: the agent hosts' least-privilege policy as JSON."""
    from cloud.iam import agent_policy

    print(json.dumps(agent_policy(args.stack_name, _aws().account, args.secret_id), indent=2))
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
