"""How the state machine runs each stage of a workflow, chosen at `workflow put` time so that
the run stays within AWS's limits (`cloud/quotas.py`):

- **inline**: the stage's jobs are iterations of one inline Map in the run's own execution. That
  is the cheap path (one state transition per job), for a stage that needs at most 40 jobs at
  once, in a workflow whose history fits one execution.
- **children**: the stage's jobs are split into chunks of `chunk_size`; each chunk is a child
  execution of the same state machine (`states:startExecution.sync:2`) with a history of its
  own, running `jobs_at_once` of its jobs at a time; `chunks_at_once` children run at once.
  That is how a stage runs more than 40 jobs at once (up to 40 x 40 = 1,600), and how a
  workflow holds more jobs than one history does.

A stage runs in children when it is wider than 40, or when the run's history would pass
`HISTORY_BUDGET` with it inline (stages are moved, largest first, until the rest fits). The
plan is written into each stage of the config item (`plan`); the state machine only reads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from cloud.quotas import INLINE_MAP_MAX_CONCURRENCY, MAX_HISTORY_EVENTS

if TYPE_CHECKING:
    from cloud.config import Stage, Workflow

INLINE: Final = "inline"
CHILDREN: Final = "children"
Mode = Literal["inline", "children"]
# A stage's children run in one inline Map of the run, each child's jobs in one of its own.
MAX_STAGE_AT_ONCE: Final = INLINE_MAP_MAX_CONCURRENCY * INLINE_MAP_MAX_CONCURRENCY
# What a plan fills of one history: the rest is room for retries (each adds ~3 events).
HISTORY_BUDGET: Final = MAX_HISTORY_EVENTS * 4 // 5
# A child's input carries its chunk's job names; the `.sync:2` answer carries that input back.
CHUNK_INPUT_BUDGET_BYTES: Final = 128 * 1024

# History events of a successful run, as the state machine writes them (tests/test_wide_e2e.py
# checks them against real histories).
EVENTS_PER_RUN: Final = 48  # start, input, config, audit row, lock, the stages' Map, end, ...
# A stage's iteration, four Choices (enabled, legacy_args, plan, mode), StageSettings, its Map
# (RunJobs or RunChunks); 2 more for a stage that takes the workflow's legacy_args.
EVENTS_PER_STAGE: Final = 16
EVENTS_TO_INHERIT_LEGACY_ARGS: Final = 2
EVENTS_PER_SKIPPED_STAGE: Final = 6  # its iteration, a Choice, a Pass
EVENTS_PER_INLINE_JOB: Final = 7  # iteration, Task entered/exited, activity scheduled/started/done
EVENTS_PER_CHUNK: Final = 8  # in the run: iteration, Task entered/scheduled/started/submitted/...
EVENTS_PER_CHILD: Final = 12  # a child's own besides its stage's: start, Choices, Maps, end
MAX_CHUNK_JOBS: Final = (HISTORY_BUDGET - EVENTS_PER_CHILD - EVENTS_PER_STAGE) // (
    EVENTS_PER_INLINE_JOB
)


@dataclass(frozen=True)
class StagePlan:
    """How one stage runs; `jobs_at_once` x `chunks_at_once` jobs at most at once."""

    mode: Mode
    jobs: int
    jobs_at_once: int
    chunk_size: int
    chunks_at_once: int

    @property
    def chunks(self) -> int:
        return math.ceil(self.jobs / self.chunk_size)

    @property
    def at_once(self) -> int:
        """The most jobs of this stage that run at the same time."""
        lanes = min(self.chunks_at_once, self.chunks) if self.mode == CHILDREN else 1
        return min(self.jobs, self.jobs_at_once * lanes)

    def to_values(self) -> dict[str, str | int]:
        """The `plan` map the state machine reads from each stage of the config item."""
        return {
            "mode": self.mode,
            "jobs_at_once": self.jobs_at_once,
            "chunk_size": self.chunk_size,
            "chunks_at_once": self.chunks_at_once,
        }


def wanted_at_once(stage: Stage) -> int:
    """Jobs of the stage the config asks to run at once (0 = all of them)."""
    jobs = len(stage.scripts)
    if stage.execution_type == "sequential":
        return 1
    return jobs if stage.max_parallel == 0 else min(stage.max_parallel, jobs)


def plan_workflow(workflow: Workflow) -> list[StagePlan]:
    """Every stage's plan: inline where it can be, children where it must."""
    plans = [_first_plan(stage) for stage in workflow.workflow_stages]
    while run_history_events(workflow, plans) > HISTORY_BUDGET:
        inline = [
            (plan.jobs, index)
            for index, (stage, plan) in enumerate(zip(workflow.workflow_stages, plans, strict=True))
            if stage.enabled and plan.mode == INLINE
        ]
        if not inline:
            break  # everything already runs in children: the size check says what to do
        _, index = max(inline)
        plans[index] = _children(workflow.workflow_stages[index])
    return plans


def _first_plan(stage: Stage) -> StagePlan:
    wanted = wanted_at_once(stage)
    if wanted > INLINE_MAP_MAX_CONCURRENCY:
        return _children(stage)
    jobs = len(stage.scripts)
    return StagePlan(INLINE, jobs, jobs_at_once=wanted, chunk_size=jobs, chunks_at_once=1)


def _children(stage: Stage) -> StagePlan:
    jobs = len(stage.scripts)
    lanes, per_lane = split_width(min(wanted_at_once(stage), MAX_STAGE_AT_ONCE))
    # Every name as the child's input holds it: {"S":"name"} and a comma.
    widest_name = max(len(_json_string(name)) + 7 for name in stage.scripts)
    chunk_size = max(
        1,
        min(
            math.ceil(jobs / lanes),
            MAX_CHUNK_JOBS,
            CHUNK_INPUT_BUDGET_BYTES // widest_name,
        ),
    )
    return StagePlan(CHILDREN, jobs, per_lane, chunk_size, chunks_at_once=lanes)


def split_width(width: int) -> tuple[int, int]:
    """(children at once, jobs at once in each) for `width` jobs at once: each at most 40,
    their product as close to `width` as a few more children make it, never above it."""
    if width <= INLINE_MAP_MAX_CONCURRENCY:
        return 1, max(width, 1)
    fewest = math.ceil(width / INLINE_MAP_MAX_CONCURRENCY)
    candidates = range(fewest, min(INLINE_MAP_MAX_CONCURRENCY, fewest + 3) + 1)
    lanes = max(candidates, key=lambda n: (n * (width // n), -n))
    return lanes, width // lanes


def run_history_events(workflow: Workflow, plans: list[StagePlan]) -> int:
    """The run's own history with these plans, without retries."""
    events = EVENTS_PER_RUN
    for stage, plan in zip(workflow.workflow_stages, plans, strict=True):
        if not stage.enabled:
            events += EVENTS_PER_SKIPPED_STAGE
            continue
        events += EVENTS_PER_STAGE
        if stage.legacy_args is None:
            events += EVENTS_TO_INHERIT_LEGACY_ARGS
        if plan.mode == INLINE:
            events += plan.jobs * EVENTS_PER_INLINE_JOB
        else:
            events += plan.chunks * EVENTS_PER_CHUNK
    return events


def child_history_events(plan: StagePlan) -> int:
    """The history of the stage's largest child, without retries (0 for an inline stage); its
    stage has legacy_args of its own, from the run."""
    if plan.mode == INLINE:
        return 0
    return EVENTS_PER_CHILD + EVENTS_PER_STAGE + plan.chunk_size * EVENTS_PER_INLINE_JOB


def _json_string(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode("utf-8")
