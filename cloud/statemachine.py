"""The one state machine: its ASL lives in `workflow.asl.json` (data, validated in tests); this
module fills in the stack's resource names and checks the graph before anything is deployed."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from cloud.names import StackNames

ASL_FILE = "workflow.asl.json"
_PLACEHOLDER_RE = re.compile(r"\$\{([A-Za-z]+)\}")
# States whose transition is Next/End; Choice, Succeed and Fail end or branch on their own.
_TERMINAL_TYPES = frozenset({"Succeed", "Fail"})


class DefinitionError(ValueError):
    """The ASL file is broken: a dangling Next, an unreachable state, an unfilled placeholder."""


def load_template() -> str:
    """The ASL text as shipped, with `${Name}` placeholders."""
    return resources.files("cloud").joinpath(ASL_FILE).read_text(encoding="utf-8")


def render_definition(names: StackNames, activity_arn: str, topic_arn: str) -> str:
    """The definition for one stack, as deterministic JSON text (so deploy can compare it)."""
    values = {
        "ConfigTable": names.config_table,
        "JobAuditTable": names.job_audit_table,
        "WorkflowAuditTable": names.workflow_audit_table,
        "ActivityArn": activity_arn,
        "TopicArn": topic_arn,
    }

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise DefinitionError(f"{ASL_FILE}: unknown placeholder ${{{key}}}")
        return values[key]

    definition = json.loads(_PLACEHOLDER_RE.sub(fill, load_template()))
    validate(definition)
    return json.dumps(definition, indent=2, sort_keys=True)


def validate(definition: dict[str, Any]) -> None:
    """Check what Step Functions would reject at create time, and what it would not but should
    (unreachable states), for the top level and every nested Map processor."""
    _validate_graph(definition, "")


def _validate_graph(graph: dict[str, Any], where: str) -> None:
    states: dict[str, Any] = graph.get("States") or {}
    start = graph.get("StartAt")
    if start not in states:
        raise DefinitionError(f"{where or 'top level'}: StartAt {start!r} is not a state")
    for name, state in states.items():
        _validate_state(name, state, states, f"{where}{name}")
    unreachable = set(states) - _reachable(start, states)
    if unreachable:
        raise DefinitionError(f"{where or 'top level'}: unreachable states {sorted(unreachable)}")


def _validate_state(name: str, state: dict[str, Any], states: dict[str, Any], where: str) -> None:
    kind = state.get("Type")
    for target in _targets(state):
        if target not in states:
            raise DefinitionError(f"{where}: goes to {target!r}, which is not a state")
    needs_transition = kind not in _TERMINAL_TYPES and kind != "Choice"
    if needs_transition and ("Next" in state) == bool(state.get("End")):
        raise DefinitionError(f"{where}: needs exactly one of Next or End")
    if kind == "Map":
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if not processor:
            raise DefinitionError(f"{where}: Map without ItemProcessor")
        _validate_graph(processor, f"{where}.")


def _targets(state: dict[str, Any]) -> list[str]:
    targets = [state["Next"]] if "Next" in state else []
    targets += [c["Next"] for c in state.get("Choices", [])]
    targets += [c["Next"] for c in state.get("Catch", [])]
    if "Default" in state:
        targets.append(state["Default"])
    return targets


def _reachable(start: str, states: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    pending = [start]
    while pending:
        name = pending.pop()
        if name in seen or name not in states:
            continue
        seen.add(name)
        pending.extend(_targets(states[name]))
    return seen
