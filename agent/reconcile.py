"""Settling what a previous run of the agent left in the journal, at start.

First, synchronously, every process group a previous run's job may have left is killed (the
reaper normally got there first: this covers the reaper dying too). Then each entry is
settled in the background while the agent already polls:

- its log stream is shipped from where CloudWatch stopped to the end of the local file;
- an owed audit write and completion are delivered as they were decided;
- a script whose end was journaled but not reported is reported as it ended (its tail read
  back from the local log), not run again: that is what makes a kill -9 between a script's
  end and its report harmless, as long as the report arrives before the heartbeat timeout;
- a job that was still running (or not started) is failed back with Agent.ShuttingDown so the
  state machine retries it at once instead of after a heartbeat timeout, and its audit row,
  if it had one, says Abandoned.
"""

from __future__ import annotations

import structlog

from agent import errors, logs, schema
from agent.job import JobContext
from agent.journal import Entry, current_boot_id
from agent.outcome import JobFacts, Outcome, script_outcome
from agent.output import tail_of_file
from agent.report import deliver_owed
from agent.runner import kill_group
from agent.taskinput import parse_task_input

log = structlog.get_logger(__name__)


def kill_orphans(entries: list[Entry]) -> None:
    """Kill the process groups of a previous run's jobs that still run (same boot only)."""
    boot_id = current_boot_id()
    for entry in entries:
        same_boot = entry.boot_id == boot_id
        if entry.pgid and same_boot and kill_group(entry.pgid, entry.pgid_start_ticks):
            log.warning("orphan_process_group_killed", pgid=entry.pgid)


async def settle(ctx: JobContext, entry: Entry) -> None:
    """Ship the rest of the entry's log and deliver what it owes."""
    if entry.shipping is not None and not entry.shipping.done:
        ctx.shipping.start(entry.token, entry.shipping, None)
    if entry.reported:
        return
    if entry.completion is None and entry.audit_end is None:
        _decide(ctx, entry)
    await deliver_owed(ctx.reporting, entry.token)
    log.info("journal_entry_settled", token_id=logs.token_id(entry.token))


def _decide(ctx: JobContext, entry: Entry) -> None:
    """What to report for a job the previous run never decided on."""
    try:
        task = parse_task_input(entry.task_input)
    except errors.InvalidInput as exc:
        outcome = Outcome(schema.FAILED, error=exc)
    else:
        if entry.script_end is not None:
            facts = JobFacts(
                task.job_name,
                task.timeout_seconds,
                entry.log_stream,
                ctx.instance_id,
                ctx.settings.worker_name,
            )
            path = entry.shipping.path if entry.shipping else None
            tail = tail_of_file(path, ctx.settings.output_tail_lines) if path else ""
            outcome = script_outcome(entry.script_end, facts, tail)
            log.info("journal_script_end_reported", job_name=task.job_name, status=outcome.status)
        else:
            # The agent died while the job ran (its script died with it) or before it began.
            error = errors.ShuttingDown("The agent restarted while the job ran; it was stopped.")
            status: schema.Status = schema.ABANDONED if entry.attempt else schema.CANCELLED
            outcome = Outcome(status, error=error)
    audit_end = outcome.audit_end() if entry.attempt is not None else None
    ctx.journal.update(entry.token, audit_end=audit_end, completion=outcome.completion())
