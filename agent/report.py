"""Delivering what a job's end owes, from its journal entry: the audit row's final write, then
the completion. The same path serves a job that just ended and one a previous run of the agent
left owing, so a restart in between changes nothing but the delay.

The audit write comes first, so a workflow that moves on finds its job rows final. Both are
retried until delivered while the agent lives; cancelled (the agent stops), they stay in the
journal for the next start.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent import errors
from agent.audit import JobAuditTable, RowKey
from agent.aws import error_code
from agent.completion import Completer
from agent.journal import Entry, Journal
from agent.taskinput import parse_task_input

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Reporting:
    journal: Journal
    audit: JobAuditTable
    completer: Completer


async def deliver_owed(reporting: Reporting, token: str) -> None:
    """Deliver what the journal entry of `token` owes, then mark it reported (the entry goes
    once its log is shipped too)."""
    entry = reporting.journal.get(token)
    if entry is None:
        return
    key = row_key(entry)
    if entry.audit_end is not None and entry.attempt is not None and key is not None:
        try:
            await reporting.audit.finish(key, entry.attempt, entry.log_stream, entry.audit_end)
        except (ClientError, BotoCoreError) as exc:
            # A final answer (not an outage): the job's result stands without its row.
            log.error("audit_finish_failed", status=entry.audit_end.status, error=error_code(exc))
    if entry.completion is not None:
        await reporting.completer.send(token, entry.completion)
    reporting.journal.update(token, reported=True)


def row_key(entry: Entry) -> RowKey | None:
    """The audit row an entry's job writes, from its task input (None if the input was bad)."""
    try:
        task = parse_task_input(entry.task_input)
    except errors.InvalidInput:
        return None
    return RowKey(task.job_name, task.workflow_execution_id)
