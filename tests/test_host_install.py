"""A host install, as `deploy/install.sh` does it: the wheel `pip wheel --no-deps .` builds,
installed with no extras into a fresh venv, the source tree removed before anything runs.

It runs the daemon's and the cloud kit's commands, has no moto, `rsql-cloud emulator` /
`rsql-cloud demo` say in one line which extra to install, and `rsql-cloud fleet deploy` finds
the installer and the systemd unit it puts in the user data in the package itself (no checkout).
Slow (a venv and a real pip install from the package index, with pip's cache), so it is marked
`slow`; `make test` runs it.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cloud.names import StackNames

REPO = Path(__file__).resolve().parent.parent
HINT = "pip install 'rsql-agent[emulator]'"
# What a checkout holds besides the source the build needs; the rest is copied as it is.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", ".*_cache", ".demo", ".emu"
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built from a copy that is removed once it is built."""
    root = tmp_path_factory.mktemp("wheel")
    # A copy: building in the checkout itself would leave build/ and *.egg-info behind.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_COPIED)
    built = pip(sys.executable, "wheel", "--no-deps", "--wheel-dir", str(root), str(source))
    assert built.returncode == 0, built.stdout + built.stderr
    shutil.rmtree(source)
    (found,) = root.glob("rsql_agent-*.whl")
    return found


@pytest.fixture(scope="module")
def host_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Path]:
    """A venv with the wheel installed without extras; its bin directory."""
    venv = tmp_path_factory.mktemp("host-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = pip(str(venv / "bin" / "python"), "install", str(wheel))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield venv / "bin"


def pip(python: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "pip", *argv, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )


def run(
    bin_dir: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / argv[0]), *argv[1:]],
        # Nothing of the dev venv: only the host install's own programs (and the emulator's
        # AWS settings when given). The working directory is the venv's, outside the checkout.
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir.parent), **(env or {})},
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


def test_the_wheel_carries_the_host_files_the_checkout_links_to(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name, link in (
            ("install.sh", REPO / "deploy" / "install.sh"),
            ("rsql-agent.service", REPO / "systemd" / "rsql-agent.service"),
            ("agent.env.example", REPO / "systemd" / "agent.env.example"),
        ):
            # One source of truth: the checkout's paths are links to the packaged files.
            assert link.is_symlink() and link.resolve() == REPO / "cloud" / "host" / name
            assert archive.read(f"cloud/host/{name}").decode() == link.read_text()


def test_fleet_deploy_from_the_wheel_puts_the_packaged_installer_and_unit_in_the_user_data(
    host_venv: Path, emulator: Any
) -> None:
    names = StackNames(f"whl{uuid.uuid4().hex[:8]}")
    stack = names.stack_name
    env = {k: v for k, v in emulator.env.items() if k.startswith(("AWS_", "RSQL_AGENT_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    ec2 = boto3.client("ec2", endpoint_url=emulator.endpoint_url)
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    done = run(host_venv, "rsql-cloud", "deploy", "--stack-name", stack, env=env)
    assert done.returncode == 0, done.stderr
    fleet = ["rsql-cloud", "fleet", "deploy", "--stack-name", stack, "--subnets", subnet]
    fleet += ["--instance-types", "m5.large", "--agent-source", "rsql-agent==0.1.0"]
    fleet += ["--scripts", "/opt/etl/scripts"]
    done = run(host_venv, *fleet, "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert f"Creating EC2 launch template: {names.launch_template}" in done.stdout, done.stdout
    done = run(host_venv, *fleet, env=env)
    assert done.returncode == 0, done.stderr
    (version,) = ec2.describe_launch_template_versions(
        LaunchTemplateName=names.launch_template, Versions=["$Latest"]
    )["LaunchTemplateVersions"]
    script = base64.b64decode(version["LaunchTemplateData"]["UserData"]).decode()
    assert (REPO / "deploy" / "install.sh").read_text() in script
    assert (REPO / "systemd" / "rsql-agent.service").read_text() in script
