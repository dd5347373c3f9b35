"""`rsql-agent run`: the daemon.

Signals live here and only here: SIGTERM or SIGINT asks the agent to drain; a second one (an
operator who does not want to wait) stops it at once, killing running scripts; what they never
reported stays in the journal for the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import structlog
from dotenv import dotenv_values

from agent import __version__, logs, systemd
from agent.app import Agent, StartupError
from agent.settings import ENV_FILE_VARIABLE, Settings, SettingsError

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_BAD_SETTINGS = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    options = _parser().parse_args(args)
    return _run(options.env_file, options.log_level)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsql-agent",
        description="Run RSQL scripts for a Step Functions activity (the host daemon).",
        epilog="example:\n  rsql-agent run --env-file /etc/rsql-agent/agent.env",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="poll the activity and run scripts until SIGTERM/SIGINT",
        description="Poll the Step Functions activity and run RSQL scripts until SIGTERM or "
        "SIGINT, then drain\n(a second signal stops it at once). Settings come from RSQL_AGENT_* "
        "environment variables,\nor KEY=VALUE lines in --env-file (docs/contracts.md lists every "
        "setting and its default).",
        epilog="example:\n"
        "  RSQL_AGENT_ACTIVITY_ARN=arn:aws:states:us-east-1:123456789012:activity:rsql-jobs \\\n"
        "  RSQL_AGENT_SCRIPT_DIR=/opt/rsql-agent/scripts rsql-agent run\n"
        "  rsql-agent run --env-file /etc/rsql-agent/agent.env --log-level debug\n"
        "exit codes: 0 stopped cleanly, 1 could not start, 2 bad settings",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--env-file",
        help=f"KEY=VALUE file to read first (default: ${ENV_FILE_VARIABLE}); "
        "variables already in the environment win",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def _run(env_file: str | None, log_level: str) -> int:
    logs.configure(level=log_level)
    env_file = env_file or os.environ.get(ENV_FILE_VARIABLE) or None
    try:
        if env_file:
            export_env_file(env_file)
        settings = Settings.load(env_file)
    except (SettingsError, OSError) as exc:
        print(f"rsql-agent: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    return asyncio.run(_serve(settings))


def export_env_file(path: str) -> None:
    """Put the file's variables into the environment (the real environment wins), as
    systemd's EnvironmentFile would: boto3 reads AWS_* from there and scripts inherit it."""
    if not os.path.isfile(path):
        raise SettingsError(f"{ENV_FILE_VARIABLE}: no such file: {path}")
    for key, value in dotenv_values(path).items():
        if value is not None:
            os.environ.setdefault(key, value)


async def _serve(settings: Settings) -> int:
    # Before the agent copies the environment its scripts inherit: they must not see it.
    notifier = systemd.Notifier.from_environment()
    agent = Agent(settings)
    loop = asyncio.get_running_loop()
    stops = 0

    def on_stop_signal() -> None:
        nonlocal stops
        stops += 1
        if stops == 1:
            agent.request_stop()
        else:
            agent.force_stop()

    loop.add_signal_handler(signal.SIGTERM, on_stop_signal)
    loop.add_signal_handler(signal.SIGINT, on_stop_signal)
    try:
        async with systemd.supervising(agent, notifier):
            await agent.run()
    except StartupError as exc:
        log.error("agent_start_failed", error=str(exc))
        return EXIT_START_FAILED
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
