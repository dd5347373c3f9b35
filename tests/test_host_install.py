"""A host install, as `deploy/install.sh` does it: a fresh venv, `pip install .` with no extras.

It runs the daemon's and the cloud kit's commands, has no moto, and `rsql-cloud emulator` /
`rsql-cloud demo` say in one line which extra to install. Slow (a venv and a real pip install
from the package index, with pip's cache), so it is marked `slow`; `make test` runs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HINT = "pip install 'rsql-agent[emulator]'"
# What a checkout holds besides the source the build needs; the rest is copied as it is.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", ".*_cache", ".demo", ".emu"
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def host_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv with this checkout pip-installed without extras; its bin directory."""
    root = tmp_path_factory.mktemp("host-install")
    # A copy: building in the checkout itself would leave build/ and *.egg-info behind.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_COPIED)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield venv / "bin"


def run(bin_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / argv[0]), *argv[1:]],
        # Nothing of the dev venv: only the host install's own programs.
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir.parent)},
        cwd=bin_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_host_install_runs_the_agent_and_the_cloud_kit_without_moto(host_venv: Path) -> None:
    for argv in (["rsql-agent", "--help"], ["rsql-agent", "run", "--help"]):
        done = run(host_venv, *argv)
        assert done.returncode == 0, done.stderr
        assert "example:" in done.stdout
    for command in (["deploy"], ["workflow", "start"], ["iam", "agent-policy"]):
        done = run(host_venv, "rsql-cloud", *command, "--help")
        assert done.returncode == 0, done.stderr
        assert "--stack-name" in done.stdout
    # The workflow commands load too: validate needs no AWS.
    sample = REPO / "rsql_scripts" / "blog_test_workflow.json"
    done = run(host_venv, "rsql-cloud", "workflow", "validate", str(sample))
    assert done.returncode == 0, done.stderr
    # The daemon's modules load: with no settings it stops at them (exit 2), not at an import.
    done = run(host_venv, "rsql-agent", "run")
    assert done.returncode == 2 and "RSQL_AGENT_ACTIVITY_ARN" in done.stderr, done.stderr
    for module in ("moto", "pgserver", "werkzeug"):
        done = run(host_venv, "python", "-c", f"import {module}")
        assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr, module


@pytest.mark.parametrize("command", ["emulator", "demo"])
def test_emulator_commands_name_the_extra_in_one_line(host_venv: Path, command: str) -> None:
    done = run(host_venv, "rsql-cloud", command)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and HINT in done.stderr, done.stderr
    assert done.stderr.startswith(f"rsql-cloud {command}: ")
