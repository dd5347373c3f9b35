"""The workflow config model: the AWS sample's item as it is, our optional settings with their
defaults, the DynamoDB item the state machine reads, and a located message for every mistake.
No AWS here."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cloud.config import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    ConfigError,
    Workflow,
    load_workflow_file,
    parse_workflow,
)

# The AWS sample's config item exactly as its walkthrough gives it (tab-indented, no optional
# fields), and this repository's copy for the demo.
SAMPLE = Path(__file__).resolve().parent / "data" / "aws_sample_blog_test_workflow.json"
REPO_SAMPLE = Path(__file__).resolve().parent.parent / "rsql_scripts" / "blog_test_workflow.json"


def sample() -> dict[str, Any]:
    return {
        "workflow_id": "wf",
        "workflow_description": "test",
        "workflow_stages": [
            {
                "execution_flag": "y",
                "execution_type": "sequential",
                "scripts": ["a.sh", "b.sh"],
                "stage_description": "one",
            },
            {
                "execution_flag": "y",
                "execution_type": "parallel",
                "scripts": ["c.sh", "d.sh"],
                "stage_description": "two",
            },
        ],
    }


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_workflow(data, "wf.json")
    assert str(caught.value).splitlines() == [f"wf.json: {p}" for p in caught.value.problems]
    return caught.value.problems


def with_change(path: str, value: Any) -> dict[str, Any]:
    """The sample with one value set; path like "workflow_stages.1.execution_type"."""
    data = copy.deepcopy(sample())
    *parents, last = path.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value
    return data


# -- the AWS sample ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SAMPLE, REPO_SAMPLE], ids=["aws-sample", "repo-sample"])
def test_the_aws_sample_item_is_accepted_as_it_is(path: Path) -> None:
    workflow = load_workflow_file(path)
    assert workflow.workflow_id == "blog_test_workflow"
    assert [s.execution_type for s in workflow.workflow_stages] == [
        "sequential",
        "parallel",
        "parallel",
    ]
    assert workflow.job_names == [f"rsql_blog_script_{n}.sh" for n in range(1, 7)]


def test_to_item_has_native_types_every_default_and_each_stages_plan() -> None:
    item = parse_workflow(sample()).to_item()
    assert item == {
        "workflow_id": {"S": "wf"},
        "workflow_description": {"S": "test"},
        "heartbeat_seconds": {"N": str(DEFAULT_HEARTBEAT_SECONDS)},
        "legacy_args": {"BOOL": False},
        "variables": {"M": {}},
        "variables_json": {"S": "{}"},
        "workflow_stages": {
            "L": [
                {
                    "M": {
                        "execution_flag": {"S": "y"},
                        "execution_type": {"S": kind},
                        "scripts": {"L": [{"S": a}, {"S": b}]},
                        "stage_description": {"S": description},
                        "max_parallel": {"N": "0"},
                        "timeout_seconds": {"N": str(DEFAULT_TIMEOUT_SECONDS)},
                        # Two small stages run in the run's own execution: one job at a time
                        # for the sequential one, both at once for the parallel one.
                        "plan": {
                            "M": {
                                "mode": {"S": "inline"},
                                "jobs_at_once": {"N": at_once},
                                "chunk_size": {"N": "2"},
                                "chunks_at_once": {"N": "1"},
                            }
                        },
                    }
                }
                for kind, a, b, description, at_once in (
                    ("sequential", "a.sh", "b.sh", "one", "1"),
                    ("parallel", "c.sh", "d.sh", "two", "2"),
                )
            ]
        },
    }


def test_optional_settings_reach_the_item() -> None:
    data = with_change("workflow_stages.1.max_parallel", 3)
    data["workflow_stages"][1]["timeout_seconds"] = 120
    data["heartbeat_seconds"] = 5
    item = parse_workflow(data).to_item()
    stage = item["workflow_stages"]["L"][1]["M"]
    assert stage["max_parallel"] == {"N": "3"} and stage["timeout_seconds"] == {"N": "120"}
    assert item["heartbeat_seconds"] == {"N": "5"}


def test_legacy_args_and_variables_reach_the_item() -> None:
    data = sample()
    data["legacy_args"] = True
    data["workflow_stages"][1]["legacy_args"] = False
    data["variables"] = {"LOAD_DATE": "2026-11-27", "_SCHEMA": "rsql_blog"}
    workflow = parse_workflow(data)
    item = workflow.to_item()
    assert item["legacy_args"] == {"BOOL": True}
    stages = [stage["M"] for stage in item["workflow_stages"]["L"]]
    # A stage without its own setting has none in the item: the state machine takes the
    # workflow's.
    assert "legacy_args" not in stages[0] and stages[1]["legacy_args"] == {"BOOL": False}
    assert item["variables"] == {
        "M": {"LOAD_DATE": {"S": "2026-11-27"}, "_SCHEMA": {"S": "rsql_blog"}}
    }
    assert json.loads(item["variables_json"]["S"]) == data["variables"]
    assert Workflow.from_item(item) == workflow


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"legacy_args": "yes"}, "legacy_args: must be true or false, got string 'yes'"),
        ({"variables": {"1X": "v"}}, "variables.1X: variable name '1X' must be letters"),
        ({"variables": {"X": 5}}, "variables.X: must be a string, got number 5"),
    ],
)
def test_bad_legacy_args_and_variables_are_named(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_workflow({**sample(), **change})
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_from_item_reverses_to_item_and_ignores_the_lock() -> None:
    workflow = parse_workflow(with_change("workflow_stages.0.timeout_seconds", 30))
    item = {**workflow.to_item(), "running_execution_id": {"S": "exec-1"}}
    assert Workflow.from_item(item) == workflow


def test_from_item_validates_too() -> None:
    item = parse_workflow(sample()).to_item()
    item["workflow_stages"]["L"][0]["M"]["execution_type"] = {"S": "serial"}
    with pytest.raises(ConfigError, match=r"workflow_stages\[0\]\.execution_type"):
        Workflow.from_item(item, "table t")


# -- mistakes, each with its place -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "workflow_stages.1.execution_type",
            "paralel",
            "workflow_stages[1].execution_type: must be 'sequential' or 'parallel', got 'paralel'",
        ),
        (
            "workflow_stages.0.execution_flag",
            "yes",
            "workflow_stages[0].execution_flag: must be 'y' or 'n', got 'yes'",
        ),
        ("workflow_stages.1.scripts", [], "workflow_stages[1].scripts: must not be empty"),
        (
            "workflow_stages.0.scripts.1",
            "etl/load.sh",
            "workflow_stages[0].scripts[1]: job name 'etl/load.sh' must not contain a path "
            "separator",
        ),
        (
            "workflow_stages.0.scripts.1",
            "..\\load.sh",
            "workflow_stages[0].scripts[1]: job name '..\\\\load.sh' must not contain a path "
            "separator",
        ),
        (
            "workflow_stages.0.scripts.0",
            "..",
            "workflow_stages[0].scripts[0]: job name '..' must not contain '..'",
        ),
        (
            "workflow_stages.0.scripts.0",
            "-rf",
            "workflow_stages[0].scripts[0]: job name '-rf' must not start with '-'",
        ),
        (
            "workflow_stages.0.scripts.0",
            "a:b.sh",
            "workflow_stages[0].scripts[0]: job name 'a:b.sh' must not contain ':' or '*' "
            "(log stream names)",
        ),
        (
            "workflow_stages.0.scripts.0",
            7,
            "workflow_stages[0].scripts[0]: must be a string, got number 7",
        ),
        (
            "workflow_stages.0.max_parallel",
            -1,
            "workflow_stages[0].max_parallel: must be >= 0, got -1",
        ),
        (
            "workflow_stages.1.max_parallel",
            "2",
            "workflow_stages[1].max_parallel: must be an integer, got string '2'",
        ),
        (
            "workflow_stages.1.timeout_seconds",
            0,
            "workflow_stages[1].timeout_seconds: must be > 0, got 0",
        ),
        (
            "workflow_stages.1.timeout_seconds",
            True,
            "workflow_stages[1].timeout_seconds: must be an integer, got boolean true",
        ),
        ("heartbeat_seconds", 0, "heartbeat_seconds: must be >= 1, got 0"),
        (
            "workflow_id",
            "my workflow",
            "workflow_id: must be 1-64 letters, digits, '_', '-' or '.', starting with a letter "
            "or digit; got 'my workflow'",
        ),
        (
            "workflow_id",
            "",
            "workflow_id: must be 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit; got ''",
        ),
        ("workflow_stages", [], "workflow_stages: must not be empty"),
    ],
)
def test_each_mistake_is_named_with_its_place(path: str, value: Any, expected: str) -> None:
    assert problems(with_change(path, value)) == [expected]


def test_unknown_fields_are_errors_with_a_suggestion() -> None:
    data = sample()
    data["workflow_stages"][0]["max_paralel"] = 2
    data["heartbeat_second"] = 10
    data["owner"] = "etl-team"
    assert problems(data) == [
        "workflow_stages[0].max_paralel: unknown field (did you mean 'max_parallel'?)",
        "heartbeat_second: unknown field (did you mean 'heartbeat_seconds'?)",
        "owner: unknown field",
    ]


def test_a_missing_required_field_is_named() -> None:
    data = sample()
    del data["workflow_stages"][1]["execution_type"]
    assert problems(data) == ["workflow_stages[1].execution_type: required field is missing"]


def test_duplicate_job_names_across_stages_name_both_places() -> None:
    data = with_change("workflow_stages.1.scripts.1", "a.sh")
    assert problems(data) == [
        "workflow_stages[1].scripts[1]: duplicate job name 'a.sh' (also "
        "workflow_stages[0].scripts[0]); job names must be unique within a workflow"
    ]


def test_heartbeat_must_fit_inside_the_task_timeout() -> None:
    data = with_change("workflow_stages.0.timeout_seconds", 30)
    data["heartbeat_seconds"] = 90
    assert problems(data) == [
        "heartbeat_seconds: must be less than workflow_stages[0].timeout_seconds + 60 = 90, got 90"
    ]
    data["heartbeat_seconds"] = 89
    assert parse_workflow(data).heartbeat_seconds == 89


def test_max_parallel_on_a_sequential_stage_is_a_mistake() -> None:
    assert problems(with_change("workflow_stages.0.max_parallel", 4)) == [
        "workflow_stages[0].max_parallel: only applies to parallel stages (a sequential stage "
        "runs one job at a time), got 4"
    ]


def test_every_mistake_is_reported_at_once() -> None:
    data = with_change("workflow_stages.0.execution_type", "serial")
    data["workflow_stages"][1]["execution_flag"] = "N"
    data["workflow_stages"][1]["scripts"] = ["ok.sh", "../x.sh"]
    found = problems(data)
    assert [p.split(":")[0] for p in found] == [
        "workflow_stages[0].execution_type",
        "workflow_stages[1].execution_flag",
        "workflow_stages[1].scripts[1]",
    ]


def test_a_config_that_is_not_an_object() -> None:
    assert problems([sample()]) == ["the config must be a JSON object (one workflow), got list"]


def test_dynamodb_json_gets_a_hint() -> None:
    (message,) = problems(with_change("workflow_description", {"S": "x"}))
    assert message.startswith("workflow_description: must be a string, got object")
    assert "looks like DynamoDB JSON" in message


# -- files -----------------------------------------------------------------------------------------


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text('{\n  "workflow_id": "wf",\n  "workflow_stages": [\n    {"a": 1,}\n  ]\n}\n')
    with pytest.raises(ConfigError) as caught:
        load_workflow_file(path)
    assert str(caught.value) == (
        f"{path}: line 4 column 13: not valid JSON: Expecting property name enclosed in double "
        "quotes"
    )


def test_an_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_workflow_file(tmp_path / "nope.json")
    assert (
        str(caught.value)
        == f"{tmp_path / 'nope.json'}: cannot read the file: No such file or directory"
    )


def test_duplicate_keys_in_the_file_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    text = json.dumps(sample())
    path.write_text(text.replace('"workflow_id": "wf"', '"workflow_id": "wf", "workflow_id": "x"'))
    with pytest.raises(ConfigError, match="duplicate key 'workflow_id'"):
        load_workflow_file(path)
