"""The arguments of meta-commands and the conditions of `\\if` / `\\elseif`.

Arguments follow psql's rules, which RSQL keeps: words split at blanks; `'text'` is one word with
`\\n`, `\\t`, `\\\\` and `''` understood; `:NAME` is the variable's value (left as written when
the variable is not set), `:'NAME'` its value as an SQL literal, `:"NAME"` as an identifier.

A condition compares values with `=`, `==`, `<>`, `!=`, `<`, `<=`, `>`, `>=`, joined by `AND`,
`OR`, `NOT` and parentheses: numbers compare as numbers, anything else as text. A lone value is
a psql boolean (`true`/`false`, `on`/`off`, `yes`/`no`, `1`/`0`). A condition that names a
variable that is not set is a mistake in the script, never silently false.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from .script import ScriptError

_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", "'": "'"}
_NAME: Final = re.compile(r"[A-Za-z_]\w*")
_COMPARISONS: Final = ("==", "<>", "!=", "<=", ">=", "=", "<", ">")
_TRUE: Final = frozenset({"true", "on", "yes", "1", "t", "y"})
_FALSE: Final = frozenset({"false", "off", "no", "0", "f", "n"})


@dataclass(frozen=True)
class Word:
    """One argument. `quoted` when it came from quotes or a variable (an operand, never an
    operator or a keyword); `variable` names a variable reference that is not set."""

    text: str
    quoted: bool = False
    unset_variable: str | None = None


def split_args(text: str, variables: Mapping[str, str], line: int) -> list[Word]:
    """The words of a meta-command's argument text."""
    words: list[Word] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        word, pos = _word(text, pos, variables, line)
        words.append(word)
    return words


def _word(text: str, pos: int, variables: Mapping[str, str], line: int) -> tuple[Word, int]:
    parts: list[str] = []
    quoted = False
    unset: str | None = None
    while pos < len(text) and not text[pos].isspace():
        char = text[pos]
        if char == "'":
            value, pos = _single_quoted(text, pos, line)
            parts.append(value)
            quoted = True
        elif char == '"':
            end = text.find('"', pos + 1)
            end = len(text) - 1 if end == -1 else end
            parts.append(text[pos : end + 1])
            pos = end + 1
        elif char == "`":
            raise ScriptError(line, "backquoted shell commands (`...`) are not supported")
        elif char == ":" and (ref := _reference(text, pos)):
            # In a meta-command the quotes of :'x' are the value's own: the word is the value.
            start, (name, pos) = pos, ref
            if name in variables:
                parts.append(variables[name])
                quoted = True
            else:
                parts.append(text[start:pos])
                unset = unset or name
        else:
            parts.append(char)
            pos += 1
    return Word("".join(parts), quoted, unset), pos


def _single_quoted(text: str, pos: int, line: int) -> tuple[str, int]:
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(_ESCAPES.get(text[pos + 1], text[pos + 1]))
            pos += 2
        elif char == "'" and text.startswith("''", pos):
            out.append("'")
            pos += 2
        elif char == "'":
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    raise ScriptError(line, "a quoted argument is never closed")


def _reference(text: str, pos: int) -> tuple[str, int] | None:
    """(name, position after it) for `:NAME`, `:'NAME'` or `:"NAME"` at `pos`."""
    for quote in ("'", '"'):
        if text.startswith(":" + quote, pos):
            match = _NAME.match(text, pos + 2)
            if match and text.startswith(quote, match.end()):
                return match.group(0), match.end() + 1
    match = _NAME.match(text, pos + 1)
    return (match.group(0), match.end()) if match else None


# -- conditions --------------------------------------------------------------------------------


def evaluate(text: str, variables: Mapping[str, str], line: int) -> bool:
    """The truth of an `\\if` / `\\elseif` condition."""
    words = split_args(_spaced(text), variables, line)
    if not words:
        raise ScriptError(line, "\\if needs a condition")
    for word in words:
        if word.unset_variable:
            raise ScriptError(line, f"the condition uses :{word.unset_variable}, which is not set")
    parser = _Condition(words, line)
    result = parser.disjunction()
    if parser.pos != len(words):
        raise ScriptError(line, f"cannot read the condition {text!r}")
    return result


def _spaced(text: str) -> str:
    """Blanks around operators and parentheses outside quotes, so `:a<>0` splits like `:a <> 0`."""
    out: list[str] = []
    pos, quote = 0, ""
    while pos < len(text):
        char = text[pos]
        if quote:
            quote = "" if char == quote else quote
            out.append(char)
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char in "()":
            out.append(f" {char} ")
        elif op := next((o for o in _COMPARISONS if text.startswith(o, pos)), None):
            out.append(f" {op} ")
            pos += len(op)
            continue
        else:
            out.append(char)
        pos += 1
    return "".join(out)


class _Condition:
    """Recursive descent: disjunction := conjunction (OR conjunction)*, and so on."""

    def __init__(self, words: list[Word], line: int) -> None:
        self.words = words
        self.line = line
        self.pos = 0

    def _peek(self) -> str | None:
        if self.pos < len(self.words) and not self.words[self.pos].quoted:
            return self.words[self.pos].text.upper()
        return None

    def disjunction(self) -> bool:
        result = self.conjunction()
        while self._peek() == "OR":
            self.pos += 1
            right = self.conjunction()
            result = result or right
        return result

    def conjunction(self) -> bool:
        result = self.negation()
        while self._peek() == "AND":
            self.pos += 1
            right = self.negation()
            result = result and right
        return result

    def negation(self) -> bool:
        if self._peek() == "NOT":
            self.pos += 1
            return not self.negation()
        if self._peek() == "(":
            self.pos += 1
            result = self.disjunction()
            if self._peek() != ")":
                raise ScriptError(self.line, "a ( in the condition is never closed")
            self.pos += 1
            return result
        return self.comparison()

    def comparison(self) -> bool:
        left = self._operand()
        op = self._peek()
        if op not in _COMPARISONS:
            return _boolean(left, self.line)
        self.pos += 1
        return compare(left, op, self._operand())

    def _operand(self) -> str:
        if self.pos >= len(self.words):
            raise ScriptError(self.line, "the condition ends where a value was expected")
        word = self.words[self.pos]
        self.pos += 1
        return word.text


def compare(left: str, op: str, right: str) -> bool:
    """Numbers as numbers (`010 = 10`), anything else as text."""
    try:
        return _ordered(Decimal(left.strip()), op, Decimal(right.strip()))
    except InvalidOperation:
        return _ordered(left, op, right)


def _ordered(a: Decimal | str, op: str, b: Decimal | str) -> bool:
    if op in ("=", "=="):
        return a == b
    if op in ("<>", "!="):
        return a != b
    assert type(a) is type(b)
    results = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}  # type: ignore[operator]
    return results[op]


def is_name(text: str) -> bool:
    """A valid variable name."""
    return _NAME.fullmatch(text) is not None


def is_true(value: str) -> bool:
    """psql's reading of a boolean setting such as ON_ERROR_STOP."""
    return value.strip().lower() in _TRUE


def _boolean(value: str, line: int) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ScriptError(line, f"{value!r} is not a boolean and the condition compares nothing")
