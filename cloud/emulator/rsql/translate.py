"""Redshift SQL to PostgreSQL, where the meaning is kept; a clear refusal where it is not.

Three steps, in order:
1. Statements that only steer Redshift's own machinery (`SET query_group`, `ALTER TABLE ... ALTER
   DISTKEY`, ...) do nothing here: they are answered without touching the database.
2. Statements that need what only Redshift has (`COPY` from Amazon S3, `UNLOAD`, external
   schemas, ...) stop the script: they name the construct, never a silent skip.
3. Everything else: the physical-layout clauses PostgreSQL has no words for (column `ENCODE`,
   `DISTKEY`, `SORTKEY`, `DISTSTYLE`, `BACKUP`, `WITH NO SCHEMA BINDING`) are cut out by token,
   then sqlglot turns the Redshift dialect into PostgreSQL (`GETDATE()`, `NVL`, `DATEADD`,
   `TOP n`, ...). Statements sqlglot does not model (it falls back to a raw command) go to the
   database as written; PostgreSQL then runs them or answers with an error and its SQLSTATE.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

import sqlglot
from sqlglot import Token, TokenType, exp
from sqlglot.errors import ParseError, TokenError

# Session settings that only steer Redshift's workload management and caches.
REDSHIFT_SESSION_SETTINGS: Final = frozenset(
    {
        "query_group",
        "wlm_query_slot_count",
        "enable_result_cache_for_session",
        "analyze_threshold_percent",
        "auto_analyze",
        "enable_case_sensitive_identifier",
        "json_serialization_enable",
        "mv_enable_aqmv_for_session",
    }
)
# First words of statements that need Redshift itself, with why.
_UNSUPPORTED: Final = {
    "UNLOAD": "UNLOAD writes to Amazon S3",
    "CREATE EXTERNAL": "external schemas and tables read Amazon S3 or other databases",
    "CREATE LIBRARY": "Python libraries exist only in Redshift",
    "ALTER TABLE APPEND": "ALTER TABLE APPEND moves Redshift storage blocks",
    "ANALYZE COMPRESSION": "ANALYZE COMPRESSION reports Redshift column encodings",
    "CREATE DATASHARE": "datashares exist only in Redshift",
    "CREATE MODEL": "CREATE MODEL trains with Amazon SageMaker",
}
_LAYOUT_WORDS: Final = frozenset({"DISTKEY", "SORTKEY", "DISTSTYLE", "ENCODE"})
_CLOUD_URI: Final = re.compile(r"'\s*(s3|dynamodb|emr|ssh)://", re.IGNORECASE)

logging.getLogger("sqlglot").setLevel(logging.ERROR)


class Unsupported(Exception):
    """The statement needs Redshift; the message names the construct and why."""


@dataclass(frozen=True)
class Translation:
    """What to do with one statement: run `sql`, or (when `sql` is None) answer `tag` at once."""

    sql: str | None
    tag: str = ""


def translate(sql: str) -> Translation:
    """PostgreSQL for one Redshift statement; raises Unsupported for what needs Redshift."""
    tokens = _tokens(sql)
    if not tokens:
        return Translation(None, "")
    words = [t.text.upper() for t in tokens]
    if noop := _no_op(words):
        return Translation(None, noop)
    _refuse(sql, words)
    text = _cut_layout_clauses(sql, tokens) if words[0] in ("CREATE", "ALTER") else sql
    return Translation(_transpile(text))


def _tokens(sql: str) -> list[Token]:
    try:
        return list(sqlglot.tokenize(sql, read="redshift"))
    except TokenError as exc:
        raise Unsupported(f"cannot read the statement: {exc}") from None


def _no_op(words: list[str]) -> str | None:
    """The command tag to answer for a statement that only steers Redshift, else None."""
    if words[0] in ("SET", "RESET") and len(words) > 1:
        name = words[2] if words[1] in ("SESSION", "LOCAL") and len(words) > 2 else words[1]
        if name.lower() in REDSHIFT_SESSION_SETTINGS:
            return words[0]
    if words[0] == "VACUUM":
        return "VACUUM"  # re-sorts and reclaims Redshift storage; nothing to see in the data
    if words[:2] == ["ALTER", "TABLE"] and "ALTER" in words[2:]:
        # ALTER TABLE t ALTER DISTKEY x / ALTER SORTKEY (..) / ALTER COLUMN c ENCODE e: layout.
        rest = words[words.index("ALTER", 2) + 1 :]
        if rest and (rest[0] in _LAYOUT_WORDS or rest[0] in ("COMPOUND", "INTERLEAVED")):
            return "ALTER TABLE"
        if rest[:1] == ["COLUMN"] and len(rest) > 3 and rest[2] == "ENCODE":
            return "ALTER TABLE"
    return None


def _refuse(sql: str, words: list[str]) -> None:
    joined = " ".join(words[:4])
    for start, why in _UNSUPPORTED.items():
        if joined.startswith(start):
            raise Unsupported(f"{start} is not supported locally: {why}")
    if words[0] == "COPY" and _CLOUD_URI.search(sql):
        raise Unsupported("COPY from Amazon S3 (or DynamoDB, EMR, SSH) is not supported locally")


def _cut_layout_clauses(sql: str, tokens: list[Token]) -> str:
    """The statement without Redshift's storage clauses, cut by token so that quoted names,
    strings and comments stay as they are."""
    cuts: list[tuple[int, int]] = []
    depth, index = 0, 0
    view = "VIEW" in (t.text.upper() for t in tokens[:6])
    while index < len(tokens):
        token = tokens[index]
        # Strings and "quoted" names are never clause words: a column may be called "encode".
        quoted = token.token_type in (TokenType.STRING, TokenType.IDENTIFIER)
        word = "" if quoted else token.text.upper()
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and token.token_type == TokenType.ALIAS and not view:
            break  # CREATE TABLE ... AS SELECT: the query is left alone
        span = _layout_clause(tokens, index, word, view)
        if span:
            cuts.append((tokens[index].start, tokens[span - 1].end + 1))
            index = span
            continue
        index += 1
    for start, end in reversed(cuts):
        sql = sql[:start] + sql[end:]
    return sql


def _layout_clause(tokens: list[Token], index: int, word: str, view: bool) -> int | None:
    """The index after a storage clause starting at `index`, or None. In a view only the
    late-binding clause is cut: the rest is the view's query."""
    nxt = tokens[index + 1] if index + 1 < len(tokens) else None
    after = nxt.text.upper() if nxt else ""
    late_binding = word == "WITH" and after == "NO" and index + 3 < len(tokens)
    if late_binding and tokens[index + 2].text.upper() == "SCHEMA":
        return index + 4  # WITH NO SCHEMA BINDING: a late-binding view
    if view:
        return None
    if word in ("COMPOUND", "INTERLEAVED") and after == "SORTKEY":
        return _layout_clause(tokens, index + 1, "SORTKEY", view)
    if word == "ENCODE" and nxt and nxt.token_type != TokenType.L_PAREN:
        return index + 2  # ENCODE az64 (the encode() function is left alone)
    if word in ("DISTSTYLE",) and nxt:
        return index + 2
    if word == "BACKUP" and after in ("YES", "NO"):
        return index + 2
    if word in ("DISTKEY", "SORTKEY"):
        if nxt and nxt.token_type == TokenType.L_PAREN:
            return _after_parens(tokens, index + 1)
        return index + 2 if after == "AUTO" else index + 1
    return None


def _after_parens(tokens: list[Token], open_index: int) -> int:
    depth = 0
    for index in range(open_index, len(tokens)):
        if tokens[index].token_type == TokenType.L_PAREN:
            depth += 1
        elif tokens[index].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return index + 1
    return len(tokens)


def _transpile(sql: str) -> str:
    try:
        tree = sqlglot.parse_one(sql, read="redshift")
    except ParseError as exc:
        detail = exc.errors[0]["description"] if exc.errors else str(exc)
        raise Unsupported(f"the Redshift SQL parser cannot read it ({detail})") from None
    if isinstance(tree, exp.Command):
        return sql  # not modelled by sqlglot: PostgreSQL decides
    return tree.sql(dialect="postgres")
