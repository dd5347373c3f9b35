"""AWS's limits that bound what one workflow may hold, in one place: the plan (`cloud/plan.py`)
keeps workflows within them, and the emulator (`cloud/emulator/patches_limits.py`) enforces
them as AWS does.

Sources: Step Functions developer guide, "Map state processing modes" (Inline mode "supports up
to 40 concurrent iterations"), "Quotas for Standard Workflows" (execution history 25,000 events;
262,144 bytes of input or output for a task, state or execution), "Avoid reaching the history
quota"; DynamoDB developer guide, "Item size" (400 KB).
"""

from __future__ import annotations

from typing import Final

# Iterations of one inline Map state at once: MaxConcurrency 0, or above 40, runs 40.
INLINE_MAP_MAX_CONCURRENCY: Final = 40
# Events in one execution's history; event 25,000 that is not ExecutionSucceeded fails it.
MAX_HISTORY_EVENTS: Final = 25_000
HISTORY_LIMIT_ERROR: Final = "States.Runtime"
HISTORY_LIMIT_CAUSE: Final = (
    f"The execution reached the maximum number of history events ({MAX_HISTORY_EVENTS})."
)
# A state's input (after Parameters) or output, a task's result, an execution's input, as
# UTF-8 JSON text; past it the state fails with States.DataLimitExceeded.
MAX_PAYLOAD_BYTES: Final = 262_144
DATA_LIMIT_ERROR: Final = "States.DataLimitExceeded"
# One DynamoDB item (the config item, a workflow audit row).
MAX_ITEM_BYTES: Final = 400 * 1024
