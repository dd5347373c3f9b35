"""Agent settings: environment, env file, precedence, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings import Settings, SettingsError

ARN = "arn:aws:states:us-east-1:123456789012:activity:rsql-jobs"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("RSQL_AGENT_"):
            monkeypatch.delenv(key)


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RSQL_AGENT_ACTIVITY_ARN", ARN)
    monkeypatch.setenv("RSQL_AGENT_SCRIPT_DIR", str(tmp_path))
    monkeypatch.setenv("RSQL_AGENT_CONCURRENCY", "3")
    settings = Settings.load()
    assert settings.activity_arn == ARN
    assert settings.script_dir == tmp_path.resolve()
    assert settings.concurrency == 3
    assert settings.pollers == 2
    assert settings.shell == Path("/bin/bash")
    assert settings.state_dir == Path("/var/lib/rsql-agent")
    assert settings.heartbeat_interval_s == 20
    assert settings.log_group == "/rsql/jobs"
    assert settings.job_audit_table == "rsql-job-audit"
    assert settings.poll_read_timeout_s >= 65
    assert settings.worker_name


def test_env_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "agent.env"
    env_file.write_text(
        f"RSQL_AGENT_ACTIVITY_ARN={ARN}\n"
        f"RSQL_AGENT_SCRIPT_DIR={tmp_path}\n"
        "RSQL_AGENT_POLLERS=4\n"
        "RSQL_AGENT_SECRET_ID=\n"
        "AWS_REGION=us-east-1\n"
    )
    monkeypatch.setenv("RSQL_AGENT_ENV_FILE", str(env_file))
    monkeypatch.setenv("RSQL_AGENT_POLLERS", "5")
    settings = Settings.load()
    assert settings.pollers == 5
    assert settings.secret_id is None  # `KEY=` means unset
    assert Settings.load(env_file, pollers=1).pollers == 1


def test_pollers_never_exceed_slots(tmp_path: Path) -> None:
    settings = Settings.load(activity_arn=ARN, script_dir=tmp_path, concurrency=1, pollers=4)
    assert settings.effective_pollers == 1


def test_every_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RSQL_AGENT_CONCURRENCY", "0")
    monkeypatch.setenv("RSQL_AGENT_POLLERS", "two")
    monkeypatch.setenv("RSQL_AGENT_SHELL", str(tmp_path / "no-shell"))
    monkeypatch.setenv("RSQL_AGENT_POLL_READ_TIMEOUT_S", "60")
    monkeypatch.setenv("RSQL_AGENT_ACTIVITY_ARN", "rsql-jobs")
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    message = str(caught.value)
    for name in (
        "RSQL_AGENT_CONCURRENCY",
        "RSQL_AGENT_POLLERS",
        "RSQL_AGENT_SHELL",
        "RSQL_AGENT_POLL_READ_TIMEOUT_S",
        "RSQL_AGENT_ACTIVITY_ARN",
    ):
        assert name in message
    assert "RSQL_AGENT_SCRIPT_DIR: is required" in message


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        Settings.load(tmp_path / "nope.env")


def test_script_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"RSQL_AGENT_SCRIPT_DIR: .* is not a directory"):
        Settings.load(activity_arn=ARN, script_dir=tmp_path / "missing")


def test_every_setting_is_in_the_contracts_page() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "contracts.md").read_text()
    missing = [f for f in Settings.model_fields if f"`RSQL_AGENT_{f.upper()}`" not in page]
    assert missing == [], "add them to docs/contracts.md, 'Agent settings'"
