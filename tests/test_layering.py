"""One package per deployable: the import-linter contracts in pyproject.toml hold, and the
modules a host install imports at start load neither moto nor the emulator's other packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_linter_contracts_hold() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_entry_points_import_no_emulator_package() -> None:
    """The emulator's and the demo's command modules too: without the extra they must load to
    say which extra to install."""
    modules = [
        "agent.cli",
        "cloud.cli",
        "cloud.demo",
        "cloud.emulator.cli",
        "cloud.emulator.process",
    ]
    code = (
        f"import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('moto', 'werkzeug', 'psutil', 'pgserver') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
