"""What exactly runs for a job: the command line, its environment, and private copies.

- A shell script runs as `<shell> <script> [args...]`. With `legacy_args` (scripts written for
  the AWS sample) its arguments are `<the agent's legacy dir> <secret id>`, so that its first
  line `source $1/get_redshift_creds.sh $2` finds the connection the agent already has.
- A script saved with Windows line endings (CRLF) would end every line with a carriage return
  under bash (`exit 0\\r: numeric argument required`, a database name ending in `\\r`): it runs
  from a private copy with Unix line endings (the original is untouched) and the agent warns
  once, unless `normalise_crlf` is off, in which case the job fails at once saying how to fix it.
- A job named `*.sql` runs through the RSQL client: `rsql -v ON_ERROR_STOP=1 -f <copy>` with its
  `${NAME}` placeholders filled from the workflow's `variables`, else the job's environment; a
  placeholder with neither fails the job before any SQL runs.

Private copies live in `<state_dir>/run` (0700), each file 0600, and are removed after the job.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from agent import errors
from agent.logs import token_id
from agent.runner import safe_name
from agent.settings import Settings

log = structlog.get_logger(__name__)

LEGACY_DIR: Final = Path(__file__).resolve().parent / "legacy"
SQL_SUFFIX: Final = ".sql"
_PLACEHOLDER: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Environment a `.sql` placeholder may never read: it would put the password into SQL text.
_SECRET_NAMES: Final = frozenset({"RSPASSWORD", "PGPASSWORD"})
# Connection flags for the RSQL client, from the variables the agent sets from the secret.
_CONNECTION_FLAGS: Final = (("-h", "RSQL_HOST"), ("-p", "RSQL_PORT"), ("-U", "RSQL_USER"))


@dataclass
class Launch:
    """The command line and environment of one job, and the private files to remove after."""

    argv: list[str]
    env: dict[str, str]
    private_files: list[Path] = field(default_factory=list)

    def cleanup(self) -> None:
        for path in self.private_files:
            path.unlink(missing_ok=True)


def prepare_launch(
    settings: Settings,
    token: str,
    job_name: str,
    script: Path,
    env: dict[str, str],
    *,
    args: list[str],
    legacy_args: bool,
    variables: Mapping[str, str],
) -> Launch:
    """The Launch for a resolved script; raises InvalidScript or NotConfigured."""
    private = _private_path(settings.state_dir, token, job_name)
    if job_name.endswith(SQL_SUFFIX):
        return _sql_job(settings, job_name, script, env, variables, private)
    return _shell_job(settings, job_name, script, env, args, legacy_args, private)


def _private_path(state_dir: Path, token: str, job_name: str) -> Path:
    return state_dir / "run" / f"{token_id(token)}-{safe_name(job_name)}"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _shell_job(
    settings: Settings,
    job_name: str,
    script: Path,
    env: dict[str, str],
    args: list[str],
    legacy_args: bool,
    private: Path,
) -> Launch:
    launch = Launch([str(settings.shell), str(script)], env)
    if legacy_args:
        if not settings.secret_id:
            raise errors.NotConfigured(
                f"The workflow runs {job_name} with legacy_args (the AWS sample's "
                "`<dir> <secret id>` arguments), but this agent has no secret: set "
                "RSQL_AGENT_SECRET_ID on the host, or turn legacy_args off for this workflow."
            )
        args = [str(LEGACY_DIR), settings.secret_id, *args]
    content = script.read_bytes()
    if b"\r\n" in content:
        if not settings.normalise_crlf:
            raise errors.InvalidScript(
                f"The script {job_name} has Windows line endings (CRLF): under bash every line "
                "would end in a carriage return. Convert it on the host with "
                f"`sed -i 's/\\r$//' {script}` (or `dos2unix {script}`), or let the agent "
                "run a converted copy: RSQL_AGENT_NORMALISE_CRLF=true."
            )
        _write_private(private, content.replace(b"\r\n", b"\n"))
        launch.argv[1] = str(private)
        launch.private_files.append(private)
        log.warning(
            "script_crlf_normalised",
            job_name=job_name,
            detail="Windows line endings; running a copy with Unix ones (the file is unchanged)",
        )
    launch.argv.extend(args)
    return launch


def _sql_job(
    settings: Settings,
    job_name: str,
    script: Path,
    env: dict[str, str],
    variables: Mapping[str, str],
    private: Path,
) -> Launch:
    try:
        text = script.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidScript(f"The SQL file {job_name} is not UTF-8 text: {exc}") from None
    filled = fill_placeholders(text, variables, env, job_name)
    client = _rsql_client(settings.rsql_bin, env, job_name)
    _write_private(private, filled.replace("\r\n", "\n").encode())
    argv = [client, "-v", "ON_ERROR_STOP=1"]
    for flag, name in _CONNECTION_FLAGS:
        if env.get(name):
            argv += [flag, env[name]]
    if env.get("RSQL_DB"):
        argv += ["-d", env["RSQL_DB"]]
    return Launch([*argv, "-f", str(private)], env, [private])


def fill_placeholders(
    text: str, variables: Mapping[str, str], env: Mapping[str, str], job_name: str
) -> str:
    """`${NAME}` replaced by the workflow variable NAME, else the environment variable NAME
    (never a password); raises InvalidScript naming every placeholder with neither."""
    missing: dict[str, int] = {}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in variables:
            return variables[name]
        if name in env and name not in _SECRET_NAMES:
            return env[name]
        missing.setdefault(name, text.count("\n", 0, match.start()) + 1)
        return match.group(0)

    filled = _PLACEHOLDER.sub(value, text)
    if missing:
        where = ", ".join(f"${{{name}}} (line {line})" for name, line in missing.items())
        raise errors.InvalidScript(
            f"The SQL job {job_name} uses {where}, which neither the workflow's variables nor "
            "the job's environment define (passwords are never filled in); no SQL ran."
        )
    return filled


def _rsql_client(setting: str, env: Mapping[str, str], job_name: str) -> str:
    found = shutil.which(setting, path=env.get("PATH", os.defpath))
    if found is None:
        raise errors.NotConfigured(
            f"The SQL job {job_name} runs through the RSQL client, but {setting!r} is not an "
            "executable on the agent's PATH: install Amazon Redshift RSQL or set "
            "RSQL_AGENT_RSQL_BIN to its path."
        )
    return found


def failure_sentence(job_name: str, how: str, output_tail: str) -> str:
    """The first sentence of a failed job's cause. For a `.sql` job it carries the client's
    error line (the SQLSTATE and message), which may sit above the last lines of output."""
    sentence = f"The script {job_name} failed with {how}."
    if not job_name.endswith(SQL_SUFFIX):
        return sentence
    errors_seen = [line for line in output_tail.splitlines() if "ERROR:" in line]
    if not errors_seen:
        return f"The SQL job {job_name} failed with {how}."
    return f"The SQL job {job_name} failed with {how}: {errors_seen[-1].strip()}"
