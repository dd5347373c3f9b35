"""The local rsql's parts that need no database: splitting a script, meta-command arguments,
`\\if` conditions, and the Redshift-to-PostgreSQL translation."""

from __future__ import annotations

import pytest

from cloud.emulator.rsql.meta import evaluate, split_args
from cloud.emulator.rsql.script import Meta, ScriptError, Statement, split_script
from cloud.emulator.rsql.translate import Unsupported, translate


def test_statements_end_at_semicolons_outside_quotes_comments_and_dollar_bodies() -> None:
    items = split_script(
        "select 'a;b' as x; -- a comment; with a semicolon\n"
        '/* block; /* nested; */ still */ select "c;d"\n'
        "  from t;\n"
        "create function f() returns int as $body$ select 1; $body$ language sql;\n"
        "select E'it\\'s;' ;\n"
        "select 'unterminated at the end'"
    )
    assert [(i.sql.splitlines()[0][:30], i.line) for i in items if isinstance(i, Statement)] == [
        ("select 'a;b' as x", 1),
        ("-- a comment; with a semicolon", 2),
        ("create function f() returns in", 4),
        ("select E'it\\'s;'", 5),
        ("select 'unterminated at the en", 6),
    ]
    assert len(items) == 5


def test_a_comment_only_tail_is_no_statement_and_lines_count_from_the_first_word() -> None:
    items = split_script("\n\n/* header */\n\n  INSERT INTO t\n VALUES (1);\n-- trailing\n")
    assert items == [Statement("/* header */\n\n  INSERT INTO t\n VALUES (1)", 5)]


def test_meta_commands_take_their_line_and_pending_sql_stays_pending() -> None:
    items = split_script(
        "\\echo 'start'\nselect 1\n\\remark 'between'\n+ 1;\n  \\IF :ERROR <> 0\n\\endif\n  x;"
    )
    assert items == [
        Meta("echo", "'start'", 1),
        Meta("remark", "'between'", 3),
        Statement("select 1\n\n+ 1", 2),
        Meta("if", ":ERROR <> 0", 5),
        Meta("endif", "", 6),
        Statement("x", 7),
    ]


def test_windows_line_endings_read_as_unix_ones() -> None:
    items = split_script("\\echo 'a'\r\nselect 1;\r\n\\exit 0\r\n")
    assert items == [Meta("echo", "'a'", 1), Statement("select 1", 2), Meta("exit", "0", 3)]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("select 1;\nselect 'open\n;", 2, "quoted text is never closed"),
        ("select 1;\n\n/* open", 3, "comment is never closed"),
        ("select $x$ open", 1, "$x$ is never closed"),
    ],
)
def test_unclosed_quotes_name_their_line(text: str, line: int, what: str) -> None:
    with pytest.raises(ScriptError) as caught:
        split_script(text)
    assert caught.value.line == line and what in caught.value.message


def test_variables_in_sql_are_found_outside_quotes_and_never_in_casts() -> None:
    (statement,) = split_script("select :n, :'s', :\"c\", ':n', x::int, :unset -- :n\nfrom t;")
    assert isinstance(statement, Statement)
    text = statement.interpolate({"n": "42", "s": "it's", "c": 'a"b'})
    assert text == "select 42, 'it''s', \"a\"\"b\", ':n', x::int, :unset -- :n\nfrom t"
    assert not split_script("select 'a:b', x::text;")[0].has_variables  # type: ignore[union-attr]


def test_meta_arguments_follow_psql_quoting() -> None:
    words = split_args(
        "'\\n two words\\t' plain:ERRORCODE :ERRORCODE :'ERRORCODE' 'it''s' :nope \"dq\"",
        {"ERRORCODE": "42P01"},
        7,
    )
    assert [w.text for w in words] == [
        "\n two words\t", "plain42P01", "42P01", "42P01", "it's", ":nope", '"dq"',
    ]  # fmt: skip
    assert words[5].unset_variable == "nope"
    with pytest.raises(ScriptError, match="line 7: backquoted"):
        split_args("`date`", {}, 7)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (":ERROR <> 0", True),
        (":ERROR<>0", True),
        (":ERROR = 1", True),
        (":'ERRORCODE' = '00000'", False),
        (":ERRORCODE = 23505", False),
        (":ERRORCODE = '23505'", False),
        (":ACTIVITYCOUNT > 9", True),  # 10 > 9 as numbers, not as text
        (":ACTIVITYCOUNT >= 10 AND :ERROR = 1", True),
        (":ACTIVITYCOUNT < 5 OR NOT (:ERROR = 0)", True),
        ("NOT :ERROR", False),
        (":NAME = 'blog'", True),
        (":NAME == blog", True),
        (":NAME != 'blog'", False),
    ],
)
def test_conditions_compare_numbers_as_numbers_and_text_as_text(
    condition: str, expected: bool
) -> None:
    variables = {"ERROR": "1", "ERRORCODE": "42P01", "ACTIVITYCOUNT": "10", "NAME": "blog"}
    assert evaluate(condition, variables, 3) is expected


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (":MISSING <> 0", "uses :MISSING, which is not set"),
        ("(:ERROR = 0", "never closed"),
        (":ERROR = ", "ends where a value was expected"),
        ("maybe", "not a boolean"),
    ],
)
def test_bad_conditions_name_their_line(condition: str, message: str) -> None:
    with pytest.raises(ScriptError) as caught:
        evaluate(condition, {"ERROR": "0"}, 12)
    assert caught.value.line == 12 and message in caught.value.message


def test_redshift_storage_clauses_are_cut_and_the_rest_translated() -> None:
    translation = translate(
        'CREATE TABLE IF NOT EXISTS "rsql_blog"."t" (\n'
        "  id integer NOT NULL ENCODE az64 DISTKEY,\n"
        '  "encode" varchar(10) encode lzo,\n'
        "  created timestamp DEFAULT GETDATE() encode az64\n"
        ") BACKUP NO DISTSTYLE KEY COMPOUND SORTKEY (id, created)"
    )
    assert translation.sql == (
        'CREATE TABLE IF NOT EXISTS "rsql_blog"."t" (id INT NOT NULL, "encode" VARCHAR(10), '
        "created TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
    )
    ctas = translate("CREATE TABLE c DISTSTYLE ALL SORTKEY AUTO AS SELECT NVL(a, 0) AS a FROM t")
    assert ctas.sql == "CREATE TABLE c AS SELECT COALESCE(a, 0) AS a FROM t"
    view = translate("CREATE VIEW v AS SELECT TOP 3 a FROM t WITH NO SCHEMA BINDING")
    assert view.sql == "CREATE VIEW v AS SELECT a FROM t LIMIT 3"


@pytest.mark.parametrize(
    ("sql", "tag"),
    [
        ("/* route */ SET query_group TO 'etl'", "SET"),
        ("RESET query_group", "RESET"),
        ("set session wlm_query_slot_count to 3", "SET"),
        ("ALTER TABLE t ALTER DISTKEY id", "ALTER TABLE"),
        ("ALTER TABLE t ALTER COMPOUND SORTKEY (id)", "ALTER TABLE"),
        ("ALTER TABLE t ALTER COLUMN c ENCODE zstd", "ALTER TABLE"),
        ("VACUUM DELETE ONLY t TO 75 PERCENT", "VACUUM"),
    ],
)
def test_statements_that_only_steer_redshift_do_nothing(sql: str, tag: str) -> None:
    assert translate(sql).sql is None and translate(sql).tag == tag


def test_postgresql_settings_still_run() -> None:
    assert translate("SET search_path TO rsql_blog").sql == "SET search_path = rsql_blog"


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        (
            "COPY t FROM 's3://bucket/key' IAM_ROLE 'arn:aws:iam::1:role/r' CSV",
            "COPY from Amazon S3",
        ),
        ("UNLOAD ('select 1') TO 's3://bucket/' IAM_ROLE default", "UNLOAD"),
        ("CREATE EXTERNAL SCHEMA s FROM DATA CATALOG DATABASE 'd'", "CREATE EXTERNAL"),
        ("SELECT (", "parser cannot read it"),
    ],
)
def test_what_needs_redshift_is_refused_by_name(sql: str, construct: str) -> None:
    with pytest.raises(Unsupported, match=construct.replace("(", r"\(")):
        translate(sql)
