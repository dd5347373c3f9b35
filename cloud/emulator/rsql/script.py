"""Splitting an RSQL script into SQL statements and meta-commands, each with its line number.

The rules are psql's, which RSQL inherits: a statement ends at a `;` outside quotes, comments and
dollar-quoted bodies; a backslash outside those starts a meta-command that runs to the end of its
line. SQL text pending when a meta-command appears stays pending (psql does the same), and text
left without a `;` at the end of the script is still run. Windows line endings are read as Unix
ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# A psql variable reference in SQL text: `:name`, `:'name'` or `:"name"` (never `::`).
VARIABLE_REF: Final = re.compile(r"""(?<!:):(?:'([A-Za-z_]\w*)'|"([A-Za-z_]\w*)"|([A-Za-z_]\w*))""")
_DOLLAR_TAG: Final = re.compile(r"\$([A-Za-z_]\w*)?\$")


class ScriptError(Exception):
    """The script cannot run as written; the message names the line and the construct."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Statement:
    """One SQL statement, without its `;`. `refs` are the (start, end) offsets in `sql` of its
    `:name` references, found outside quotes and comments (`':x'` and `-- :x` do not count)."""

    sql: str
    line: int
    refs: tuple[tuple[int, int], ...] = ()

    @property
    def has_variables(self) -> bool:
        return bool(self.refs)

    def interpolate(self, variables: Mapping[str, str]) -> str:
        """The SQL with each reference to a set variable replaced, as psql does: `:x` by the
        value, `:'x'` by it as a literal, `:"x"` as an identifier; unset ones stay as written."""
        out, last = [], 0
        for start, end in self.refs:
            match = VARIABLE_REF.fullmatch(self.sql, start, end)
            assert match is not None
            literal, identifier, plain = match.groups()
            name = literal or identifier or plain
            out.append(self.sql[last:start])
            if name not in variables:
                out.append(match.group(0))
            elif literal:
                out.append("'" + variables[name].replace("'", "''") + "'")
            elif identifier:
                out.append('"' + variables[name].replace('"', '""') + '"')
            else:
                out.append(variables[name])
            last = end
        out.append(self.sql[last:])
        return "".join(out)


@dataclass(frozen=True)
class Meta:
    """A meta-command: `name` lower-cased without the backslash, `args` the rest of its line."""

    name: str
    args: str
    line: int


Item = Statement | Meta


def split_script(text: str) -> list[Item]:
    """The script's statements and meta-commands in order."""
    return _Splitter(text.replace("\r\n", "\n")).run()


class _Splitter:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.items: list[Item] = []
        self._buffer: list[str] = []
        self._buffer_chars = 0
        self._start_line = 0  # line of the first significant character of the pending statement
        self._refs: list[tuple[int, int]] = []

    def run(self) -> list[Item]:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\n":
                self._take(1)
            elif text.startswith("--", self.pos):
                self._take_until("\n", keep_end=False)
            elif text.startswith("/*", self.pos):
                self._block_comment()
            elif char == "'":
                self._significant()
                self._quoted("'", backslash=self._is_escape_string())
            elif char == '"':
                self._significant()
                self._quoted('"', backslash=False)
            elif char == "$" and (tag := _DOLLAR_TAG.match(text, self.pos)) and self._tag_ok():
                self._significant()
                self._dollar_quoted(tag.group(0))
            elif char == ";":
                self.pos += 1
                self._end_statement()
            elif char == "\\":
                self._meta_command()
            else:
                if not char.isspace():
                    self._significant()
                ref = VARIABLE_REF.match(text, self.pos) if char == ":" else None
                if ref and not self._after_colon():
                    self._refs.append((self._buffer_chars, self._buffer_chars + len(ref.group(0))))
                    self._take(len(ref.group(0)))
                else:
                    self._take(1)
        self._end_statement()
        return self.items

    # -- pieces of SQL text ---------------------------------------------------------------

    def _take(self, count: int) -> None:
        piece = self.text[self.pos : self.pos + count]
        self._buffer.append(piece)
        self._buffer_chars += len(piece)
        self.line += piece.count("\n")
        self.pos += count

    def _take_until(self, end: str, *, keep_end: bool) -> bool:
        found = self.text.find(end, self.pos)
        stop = len(self.text) if found == -1 else found + (len(end) if keep_end else 0)
        self._take(stop - self.pos)
        return found != -1

    def _significant(self) -> None:
        if not self._start_line:
            self._start_line = self.line

    def _after_colon(self) -> bool:
        return self.pos > 0 and self.text[self.pos - 1] == ":"

    def _tag_ok(self) -> bool:
        # `$1` is a parameter and `a$b$` part of an identifier, not a dollar quote.
        before = self.text[self.pos - 1] if self.pos else " "
        return not (before.isalnum() or before == "_")

    def _is_escape_string(self) -> bool:
        before = self.text[self.pos - 1 : self.pos]
        return before in ("E", "e") and (self.pos < 2 or not self.text[self.pos - 2].isalnum())

    def _block_comment(self) -> None:
        start_line, depth = self.line, 0
        while self.pos < len(self.text):
            if self.text.startswith("/*", self.pos):
                depth += 1
                self._take(2)
            elif self.text.startswith("*/", self.pos):
                depth -= 1
                self._take(2)
                if depth == 0:
                    return
            else:
                self._take(1)
        raise ScriptError(start_line, "a /* comment is never closed")

    def _quoted(self, quote: str, *, backslash: bool) -> None:
        start_line = self.line
        self._take(1)
        while self.pos < len(self.text):
            char = self.text[self.pos]
            escaped = backslash and char == "\\"
            if escaped or self.text.startswith(quote * 2, self.pos):
                self._take(2)
            elif char == quote:
                self._take(1)
                return
            else:
                self._take(1)
        raise ScriptError(start_line, f"a {quote}-quoted text is never closed")

    def _dollar_quoted(self, tag: str) -> None:
        start_line = self.line
        self._take(len(tag))
        if not self._take_until(tag, keep_end=True):
            raise ScriptError(start_line, f"the dollar-quoted body {tag} is never closed")

    # -- items ----------------------------------------------------------------------------

    def _end_statement(self) -> None:
        text = "".join(self._buffer)
        sql = text.strip()
        if self._start_line and sql:
            lead = len(text) - len(text.lstrip())
            refs = tuple((start - lead, end - lead) for start, end in self._refs)
            self.items.append(Statement(sql, self._start_line, refs))
        self._buffer.clear()
        self._buffer_chars = 0
        self._start_line = 0
        self._refs = []

    def _meta_command(self) -> None:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end == -1 else end
        body = self.text[self.pos + 1 : end]
        name, _, args = body.partition(" ")
        if "\t" in name:
            name, _, rest = name.partition("\t")
            args = f"{rest} {args}".strip()
        self.items.append(Meta(name.lower(), args.strip(), self.line))
        self.pos = end
