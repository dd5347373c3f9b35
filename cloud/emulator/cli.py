"""`rsql-cloud emulator` (also `python -m cloud.emulator`): run the emulator until SIGINT or
SIGTERM and write an env file for `set -a; . FILE; set +a`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Final

from cloud.emulator import missing_extra
from cloud.emulator.server import DEFAULT_PORT, Emulator
from cloud.names import DEFAULT_SECRET_ID, add_stack_name_option

PROG: Final = "rsql-cloud emulator"
EXIT_FAILED: Final = 1
EXIT_INTERRUPTED: Final = 130
_REPO_SCRIPT_DIR: Final = Path(__file__).resolve().parents[2] / "rsql_scripts"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, then run the emulator (exit 1 at once without the extra)."""
    args = build_parser().parse_args(argv)
    problem = missing_extra()
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return EXIT_FAILED
    env_file = args.env_file if args.env_file is not None else args.data_dir / "env"
    script_dir = args.script_dir
    if script_dir is None and _REPO_SCRIPT_DIR.is_dir():
        script_dir = _REPO_SCRIPT_DIR
    emulator = Emulator(
        args.port,
        args.data_dir,
        env_file,
        script_dir.absolute() if script_dir is not None else None,
        args.stack_name,
        fault_rate=args.fault_rate,
        fault_seed=args.fault_seed,
    )
    try:
        return run_emulator(emulator)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def run_emulator(emulator: Emulator) -> int:
    """Run the emulator until SIGINT or SIGTERM; a second signal stops it without waiting."""
    stop_requested = threading.Event()
    with _stop_signals(stop_requested):
        try:
            values = emulator.start()
            print(
                f"rsql emulator: AWS endpoint {values['AWS_ENDPOINT_URL']}, stack "
                f"{emulator.names.stack_name}, PostgreSQL {values['PGHOST']}:{values['PGPORT']} "
                f"(database {values['PGDATABASE']}, password in secret {DEFAULT_SECRET_ID} "
                f"and in {values['PGPASSFILE']})",
                flush=True,
            )
            print(f"rsql emulator: env file {emulator.env_file}", flush=True)
            print(f"rsql emulator: use it with: set -a; . {emulator.env_file}; set +a", flush=True)
            # Short waits: a signal the kernel delivers to another thread does not interrupt a
            # long wait in this one, and Python runs handlers only in the main thread.
            while not stop_requested.wait(0.2):
                pass
            print("rsql emulator: stopping", flush=True)
        except Exception as exc:  # the message is the point; the traceback goes to stderr too
            print(f"rsql emulator: failed: {exc}", file=sys.stderr, flush=True)
            raise
        finally:
            emulator.stop()
    return 0


@contextmanager
def _stop_signals(event: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `event`; a second one raises KeyboardInterrupt (stop now)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The emulator's options (`rsql-cloud emulator` hands its arguments to `main`)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the local emulator (moto with the activity bridge, and PostgreSQL "
        "standing in for Redshift) until SIGINT or SIGTERM; write an env file for "
        "`set -a; . FILE; set +a`. Needs the [emulator] extra.",
        epilog="example:\n"
        "  rsql-cloud emulator --data-dir .emu --stack-name rsql &\n"
        "  rsql-cloud emulator --data-dir .emu --fault-rate 0.02 --fault-seed 7 &   # chaos\n"
        "  set -a; . .emu/env; set +a; \"$RSQL_BIN\" -c 'select 1'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="AWS endpoint port (0: any free port)"
    )
    add_stack_name_option(parser, "the stack whose resources the env file names")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".rsql-emulator"),
        help="logs, agent state and the database live here (default: .rsql-emulator)",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="where to write the settings (default: DATA_DIR/env)",
    )
    parser.add_argument(
        "--fault-rate",
        type=_share,
        default=0.0,
        help="answer this share (0-1) of the agents' calls with ThrottlingException or HTTP 500 "
        "before serving them, as AWS does under load (default 0: none)",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=None, help="seed for --fault-rate (repeatable runs)"
    )
    parser.add_argument(
        "--script-dir",
        type=Path,
        default=None,
        help="RSQL_AGENT_SCRIPT_DIR to write (default: the repository's rsql_scripts)",
    )
    return parser
