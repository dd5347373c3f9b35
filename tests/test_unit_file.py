"""What the installer and the fleet's user data ship (cloud/host/; deploy/ and systemd/ link to
it): the systemd unit holds what the agent relies on, its paths agree with the agent's defaults
and the installer, the settings example names only real settings, the installer's help ends with
an example, and systemd's own `systemd-analyze verify` and `security` pass (`.ci/verify-unit`,
which CI runs too; skipped where systemd is not installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.settings import ENV_PREFIX, Settings
from cloud import userdata

REPO = Path(__file__).resolve().parent.parent


def directives(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file, by key (a key may repeat), comments left out."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_is_a_notify_service_with_a_watchdog_and_a_drain_that_may_take_its_time() -> None:
    unit = directives(userdata.UNIT.read_text())
    assert unit["Type"] == ["notify"]
    # READY/STATUS/WATCHDOG come from the agent's own pid, not from a script it runs.
    assert unit["NotifyAccess"] == ["main"]
    assert int(unit["WatchdogSec"][0]) > 0
    # SIGTERM to the agent alone: it drains and ends its scripts itself.
    assert (unit["KillMode"], unit["KillSignal"]) == (["mixed"], ["SIGTERM"])
    assert unit["Restart"] == ["on-failure"]


def test_the_unit_writes_only_where_the_agent_writes_by_default() -> None:
    unit = directives(userdata.UNIT.read_text())
    assert unit["ProtectSystem"] == ["strict"]
    writable = {path.lstrip("-") for line in unit["ReadWritePaths"] for path in line.split()}
    defaults = Settings.model_fields
    log_dir, state_dir = defaults["log_dir"].default, defaults["state_dir"].default
    assert writable == {str(log_dir), str(state_dir)}
    # systemd creates both, owned by the service user.
    assert unit["LogsDirectory"] == [log_dir.name] and unit["StateDirectory"] == [state_dir.name]


def test_the_installer_puts_the_agent_and_its_settings_where_the_unit_looks() -> None:
    unit = directives(userdata.UNIT.read_text())
    installer = userdata.INSTALLER.read_text()
    prefix = re.search(r"^PREFIX=(\S+)$", installer, re.MULTILINE)
    etc = re.search(r"^ETC=(\S+)$", installer, re.MULTILINE)
    assert prefix and etc
    assert unit["ExecStart"] == [f"{prefix[1]}/venv/bin/rsql-agent run"]
    assert unit["EnvironmentFile"] == [f"{etc[1]}/agent.env"]
    assert unit["User"] == unit["Group"] == ["rsql-agent"]
    assert "useradd --system" in installer and " rsql-agent\n" in installer


def test_every_setting_in_the_example_is_a_setting_of_the_agent() -> None:
    text = userdata.ENV_EXAMPLE.read_text()
    keys = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE)
    ours = [key.removeprefix(ENV_PREFIX).lower() for key in keys if key.startswith(ENV_PREFIX)]
    assert "activity_arn" in ours and "script_dir" in ours
    assert set(ours) <= set(Settings.model_fields), set(ours) - set(Settings.model_fields)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verifies_the_unit_and_rates_it_no_worse_than_the_readme_says() -> None:
    if not (REPO / ".venv" / "bin" / "rsql-agent").exists():
        pytest.skip("verify needs the console script `make install` builds in .venv")
    done = subprocess.run(
        ["bash", str(REPO / ".ci" / "verify-unit")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Overall exposure level for rsql-agent.service: 1.6 OK" in done.stdout


def test_the_installer_help_ends_with_an_example_and_needs_no_root() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "deploy" / "install.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# Install or upgrade rsql-agent")
    assert lines[-2:-1] == ["# example:"] and lines[-1].startswith("#   sudo deploy/install.sh ")
