"""Running an RSQL script: statements, variables, branches, jumps and the exit code.

RSQL's batch behaviour: a failing statement does not stop the script (unless `ON_ERROR_STOP` is
set, as psql does); it sets `:ERROR` (1, else 0), `:ERRORCODE` (the SQLSTATE, `00000` after
success), `:LAST_ERROR_MESSAGE` and `:ACTIVITYCOUNT` (rows affected or returned), and the script
decides with `\\if :ERROR <> 0 ... \\exit 21 ... \\endif`. At the end of the script the exit code
is 0; `\\exit N` ends it with N at once. The whole script is checked before anything runs
(unknown meta-commands, `\\if` blocks that do not close, `\\goto` without its `\\label` further
down, SQL that cannot be translated), so a script the local rsql cannot run stops before its
first statement with the line and the construct.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Protocol, TextIO

from . import meta, translate
from .script import Item, Meta, ScriptError, Statement

# psql's exit code for a script stopped by an error.
EXIT_SCRIPT_ERROR: Final = 3
_BRANCHING: Final = frozenset({"if", "elseif", "elif", "else", "endif"})
_COMMANDS: Final = _BRANCHING | {
    "echo", "remark", "set", "unset", "goto", "label", "exit", "quit", "q", "sleep",
}  # fmt: skip
# RSQL or psql commands a script may hold that the local rsql does not run.
_KNOWN_ELSEWHERE: Final = frozenset(
    {
        "rset", "run", "i", "ir", "include", "os", "!", "logon", "logoff", "connect", "c",
        "gset", "g", "gx", "o", "out", "copy", "pset", "timing", "h", "dt", "d", "dn", "df",
        "dv", "dm", "de", "du", "dp", "l", "sv", "z", "x", "a", "t", "f", "p", "w", "watch",
    }
)  # fmt: skip


@dataclass
class Result:
    """How one statement went: `sqlstate` None on success."""

    status: str = ""
    rowcount: int = 0
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[object, ...]] = field(default_factory=list)
    sqlstate: str | None = None
    message: str = ""


class Session(Protocol):
    def execute(self, sql: str) -> Result: ...


@dataclass
class _Frame:
    """One open `\\if`: is its current branch running, has a branch run, was `\\else` seen,
    and was it opened while skipping towards a `\\label`."""

    active: bool
    taken: bool
    seen_else: bool = False
    opened_while_jumping: bool = False


class ExitScript(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Interpreter:
    """Runs a split script against a session; `run()` returns the exit code."""

    def __init__(
        self,
        items: list[Item],
        session: Session,
        *,
        out: TextIO,
        err: TextIO,
        source: str,
        variables: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.items = items
        self.session = session
        self.out = out
        self.err = err
        self.source = source
        self.vars: dict[str, str] = {"ERROR": "0", "ERRORCODE": "00000", "ACTIVITYCOUNT": "0"}
        self.vars.update(variables or {})
        self._sleep = sleep
        self._stack: list[_Frame] = []
        self._jump: tuple[str, int] | None = None  # (label, line of the \goto)
        self._translated: dict[int, translate.Translation] = {}

    def run(self) -> int:
        try:
            self.check()
            for index, item in enumerate(self.items):
                self._step(index, item)
            return 0
        except ExitScript as stop:
            return stop.code
        except ScriptError as exc:
            self._complain(exc.line, exc.message)
            return EXIT_SCRIPT_ERROR

    def _complain(self, line: int, message: str) -> None:
        self.err.write(f"rsql:{self.source}:{line}: {message}\n")
        self.err.flush()

    # -- the check before anything runs ------------------------------------------------------

    def check(self) -> None:
        """Raise ScriptError for the first construct the script cannot run."""
        depth_lines: list[int] = []
        labels_ahead: dict[str, int] = {}
        for index in range(len(self.items) - 1, -1, -1):
            item = self.items[index]
            if isinstance(item, Meta) and item.name == "label":
                labels_ahead[item.args.split()[0] if item.args else ""] = item.line
            if isinstance(item, Meta) and item.name == "goto":
                target = item.args.split()[0] if item.args else ""
                if target not in labels_ahead:
                    raise ScriptError(
                        item.line,
                        f"\\goto {target} has no \\label {target} after it "
                        "(RSQL jumps forward only)",
                    )
        for index, item in enumerate(self.items):
            if isinstance(item, Statement):
                if not item.has_variables:
                    self._translated[index] = self._translate(item.sql, item.line)
                continue
            self._check_meta(item)
            if item.name == "if":
                depth_lines.append(item.line)
            elif item.name in ("elseif", "elif", "else", "endif") and not depth_lines:
                raise ScriptError(item.line, f"\\{item.name} without \\if")
            if item.name == "endif":
                depth_lines.pop()
        if depth_lines:
            raise ScriptError(depth_lines[-1], "\\if is never closed by \\endif")

    def _check_meta(self, item: Meta) -> None:
        if item.name in _COMMANDS:
            if item.name not in _BRANCHING:
                meta.split_args(item.args, {}, item.line)  # quoting mistakes, `shell`
            return
        if item.name in _KNOWN_ELSEWHERE or item.name.rstrip("s+") in _KNOWN_ELSEWHERE:
            raise ScriptError(
                item.line, f"the meta-command \\{item.name} is not supported by the local rsql"
            )
        raise ScriptError(item.line, f"unknown meta-command \\{item.name}")

    @staticmethod
    def _translate(sql: str, line: int) -> translate.Translation:
        try:
            return translate.translate(sql)
        except translate.Unsupported as exc:
            first = sql.strip().splitlines()[0][:80]
            raise ScriptError(line, f"{exc}: {first}") from None

    # -- running ---------------------------------------------------------------------------

    @property
    def _running(self) -> bool:
        return self._jump is None and all(frame.active for frame in self._stack)

    def _step(self, index: int, item: Item) -> None:
        if isinstance(item, Meta) and item.name in _BRANCHING:
            self._branch(item)
        elif isinstance(item, Meta) and item.name == "label":
            self._label(item)
        elif not self._running:
            return
        elif isinstance(item, Statement):
            self._statement(index, item)
        else:
            self._meta(item)

    def _branch(self, item: Meta) -> None:
        if item.name == "if":
            enclosing = self._running
            active = enclosing and meta.evaluate(item.args, self.vars, item.line)
            frame = _Frame(active, taken=active or not enclosing)
            frame.opened_while_jumping = self._jump is not None
            self._stack.append(frame)
            return
        frame = self._stack[-1]
        if item.name == "endif":
            self._stack.pop()
            return
        if frame.seen_else:
            raise ScriptError(item.line, f"\\{item.name} after \\else")
        if item.name == "else":
            frame.seen_else = True
            frame.active = not frame.taken
        else:  # \elseif: evaluated only when no branch ran yet
            enclosing = self._jump is None and all(f.active for f in self._stack[:-1])
            frame.active = enclosing and not frame.taken
            frame.active = frame.active and meta.evaluate(item.args, self.vars, item.line)
        frame.taken = frame.taken or frame.active

    def _label(self, item: Meta) -> None:
        name = item.args.split()[0] if item.args else ""
        if self._jump is None:
            return
        if name != self._jump[0]:
            self._print(f"\\label {name} ignored")
            return
        if any(frame.opened_while_jumping or not frame.active for frame in self._stack):
            raise ScriptError(self._jump[1], f"\\goto {name} jumps into an \\if block")
        self._jump = None
        self._print(f"\\label {name} processed")

    def _meta(self, item: Meta) -> None:
        words = meta.split_args(item.args, self.vars, item.line)
        texts = [word.text for word in words]
        if item.name in ("echo", "remark"):
            self._echo(item.name, texts)
        elif item.name == "set":
            self._set(texts, item.line)
        elif item.name == "unset":
            for name in texts:
                self.vars.pop(name, None)
        elif item.name == "goto":
            self._jump = (texts[0], item.line)
        elif item.name in ("exit", "quit", "q"):
            raise ExitScript(_exit_code(texts, item.line))
        elif item.name == "sleep":
            self._sleep(_seconds(texts, item.line))

    def _echo(self, name: str, texts: list[str]) -> None:
        newline = True
        if name == "echo" and texts[:1] == ["-n"]:
            texts, newline = texts[1:], False
        text = " ".join(texts)
        if name == "remark":
            text = text.replace("//", "\n")  # RSQL's line break in \remark
        self.out.write(text + ("\n" if newline else ""))

    def _set(self, texts: list[str], line: int) -> None:
        if not texts:
            for name, value in sorted(self.vars.items()):
                self._print(f"{name} = '{value}'")
            return
        name = texts[0]
        if not meta.is_name(name):
            raise ScriptError(line, f"\\set: {name!r} is not a variable name")
        self.vars[name] = "".join(texts[1:])

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")

    # -- statements --------------------------------------------------------------------------

    def _statement(self, index: int, item: Statement) -> None:
        translation = self._translated.get(index)
        if translation is None:
            translation = self._translate(item.interpolate(self.vars), item.line)
        if translation.sql is None:
            result = Result(status=translation.tag)
        else:
            self.out.flush()
            result = self.session.execute(translation.sql)
        self._record(result)
        if result.sqlstate is None:
            self._show(result)
            return
        self.out.flush()
        self._complain(item.line, f"ERROR:  {result.sqlstate}: {result.message}")
        if meta.is_true(self.vars.get("ON_ERROR_STOP", "off")):
            raise ExitScript(EXIT_SCRIPT_ERROR)

    def _record(self, result: Result) -> None:
        failed = result.sqlstate is not None
        self.vars["ERROR"] = "1" if failed else "0"
        self.vars["ERRORCODE"] = result.sqlstate or "00000"
        self.vars["SQLSTATE"] = self.vars["ERRORCODE"]
        self.vars["ACTIVITYCOUNT"] = str(max(result.rowcount, 0))
        self.vars["ROW_COUNT"] = self.vars["ACTIVITYCOUNT"]
        if failed:
            self.vars["LAST_ERROR_MESSAGE"] = result.message
            self.vars["LAST_ERROR_SQLSTATE"] = result.sqlstate or ""

    def _show(self, result: Result) -> None:
        if result.columns:
            self.out.write(format_table(result.columns, result.rows))
        elif result.status:
            self._print(result.status)


def format_table(columns: list[str], rows: list[tuple[object, ...]]) -> str:
    """psql's aligned format: header, rule, rows, `(N rows)`."""
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    # Numbers right-aligned, as psql does.
    numeric = [bool(rows) and all(_is_number(row[i]) for row in rows) for i in range(len(columns))]
    lines = [" " + " | ".join(c.center(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("-" + "-+-".join("-" * w for w in widths) + "-")
    for row in cells:
        padded = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(row, widths, numeric, strict=True)
        ]
        lines.append(" " + " | ".join(padded).rstrip())
    count = len(rows)
    lines.append(f"({count} row{'' if count == 1 else 's'})")
    return "\n".join(lines) + "\n\n"


def _is_number(value: object) -> bool:
    return value is None or (
        isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    )


def _exit_code(texts: list[str], line: int) -> int:
    if not texts:
        return 0
    try:
        code = int(texts[0])
    except ValueError:
        raise ScriptError(line, f"\\exit needs a number, got {texts[0]!r}") from None
    if not 0 <= code <= 255:
        raise ScriptError(line, f"\\exit code must be 0-255, got {code}")
    return code


def _seconds(texts: list[str], line: int) -> float:
    try:
        seconds = float(texts[0]) if texts else -1.0
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise ScriptError(line, f"\\sleep needs a number of seconds, got {' '.join(texts)!r}")
    return seconds
