"""`rsql-cloud --help` at every level ends with an example, and the top level lists every
exit code the CLI returns. No AWS here."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

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
