"""`rsql-cloud --help` at every level ends with an example, and the top level lists every
exit code the CLI returns. No AWS here."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

from cloud import commands
from cloud.cli import build_parser


def parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the tree with its command path, the top level first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


def test_every_command_help_ends_with_an_example() -> None:
    checked = []
    for path, parser in parsers(build_parser()):
        if not parser.add_help:
            continue  # `emulator` parses its own arguments: its help is its own parser's
        last_paragraph = parser.format_help().rstrip().split("\n\n")[-1].splitlines()
        heading, *examples = last_paragraph
        assert re.match(r"^examples?\b.*:$", heading), (path, heading)
        assert examples, path
        assert all(line.startswith("  rsql-cloud ") for line in examples), (path, examples)
        checked.append(" ".join(path))
    assert {"", "workflow", "workflow start", "iam", "iam agent-policy", "destroy"} <= set(checked)


def test_the_top_level_help_lists_every_exit_code() -> None:
    text = build_parser().format_help()
    codes = [
        commands.EXIT_FAILED,
        commands.EXIT_TIMEOUT,
        commands.EXIT_INTERRUPTED,
        commands.EXIT_BROKEN_PIPE,
    ]
    for code in [0, 2, *codes]:
        assert re.search(rf"\b{code} [a-z-]", text), code
    assert "141 stdout closed early" in text


def readme_commands() -> Iterator[list[str]]:
    """Every `rsql-cloud` / `rsql-agent` command in the README's shell blocks, as argv: lines
    joined at a trailing backslash, cut at pipes, redirections and `&`, comments dropped, and
    `$NAME` expanded from a `NAME="..."` assignment in the same block."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        joined = block.replace("\\\n", " ")
        variables = dict(re.findall(r'^(\w+)="([^"]*)"', joined, re.MULTILINE))
        for line in joined.splitlines():
            words = shlex.split(re.split(r"\s[|&>]", line)[0], comments=True)
            if words[:1] in (["rsql-cloud"], ["rsql-agent"]):
                expanded = [variables.get(w[1:], w) if w.startswith("$") else w for w in words]
                yield " ".join(expanded).split()


def test_every_command_in_the_readme_runbooks_parses() -> None:
    from agent.cli import _parser as agent_parser
    from cloud.emulator.cli import build_parser as emulator_parser

    seen = set()
    for argv in readme_commands():
        program, *args = argv
        if program == "rsql-agent":
            parser, rest = agent_parser(), args
        elif args[:1] == ["emulator"]:
            parser, rest = emulator_parser(), args[1:]
        else:
            parser, rest = build_parser(), args
        try:
            parser.parse_args(rest)
        except SystemExit:
            raise AssertionError(f"README: `{' '.join(argv)}` does not parse") from None
        seen.add(" ".join(args[:2]))
    # The operations runbook is among them.
    assert {"fleet deploy", "fleet status", "workflow list", "deploy --alarms"} <= seen, seen
