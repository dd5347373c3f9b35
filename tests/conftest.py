"""Shared fixtures: one local emulator per test session, and boto3 clients bound to it.

- `emulator` (session): a running `cloud.emulator.process.EmulatorProcess` (moto with the activity
  bridge, embedded PostgreSQL, secret `rsql/redshift`). Its env file's values are in
  `emulator.env` and, for the rest of the session, in `os.environ`, so code that reads the
  standard AWS_* / RSQL_AGENT_* / PG* variables talks to it. Empty GetActivityTask long polls
  last `POLL_WAIT_S` seconds (AWS: 60).
- `aws`: boto3 clients bound to the emulator: `aws.sfn`, `aws.ddb`, `aws.logs`, `aws.secrets`,
  `aws.sns`, `aws.iam`, `aws.autoscaling`, or `aws.client("service")` for any other.
- `uid`: a short unique string, for resource names (the emulator is shared by every test).
- `emulator_data_dir`: a fresh directory for a test's own `EmulatorProcess` (removed after).
  Use it rather than `tmp_path`: as root, Postgres runs as user `pgserver`, which must be able
  to reach the directory, and pytest makes its /tmp/pytest-of-root 0700 at every session start
  (another pytest session running meanwhile would lock the server out).

The emulator is shared: name everything you create with `uid`, and never assume a table or an
activity is empty unless you made it in the test.

Safety: before any test runs, this module points the AWS SDK at fake credentials, turns off the
EC2 metadata service lookup (169.254.169.254), ignores the user's AWS config files and sets an
endpoint on 127.0.0.1 (port 9, nothing listens) until the emulator's replaces it: a client made
without the emulator fails at once instead of reaching AWS.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloud.emulator.process import EmulatorProcess

POLL_WAIT_S = 3

os.environ.update(
    {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "RSQL_AGENT_INSTANCE_ID": "i-0test000000000001",
    }
)
for _key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_key, None)


def _fresh_dir(prefix: str) -> Path:
    # Under /tmp itself, not pytest's tmp root (see the module docstring).
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess]:
    """The session's emulator (see the module docstring); stopped after the last test."""
    saved = dict(os.environ)
    data_dir = _fresh_dir("rsql-emulator-session-")
    process = EmulatorProcess(data_dir, extra_env={"RSQL_EMULATOR_POLL_WAIT_S": str(POLL_WAIT_S)})
    try:
        process.start()
        os.environ.update(process.env)
        yield process
    finally:
        process.stop()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def emulator_data_dir() -> Iterator[Path]:
    """A fresh directory for a test's own EmulatorProcess; removed after the test."""
    path = _fresh_dir("rsql-emulator-test-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class AwsClients:
    """boto3 clients for the emulator; attributes are created on first use and kept."""

    endpoint_url: str
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            self._clients[service] = boto3.client(
                service,  # type: ignore[call-overload]
                endpoint_url=self.endpoint_url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                # Above the emulator's long poll; no retries that would hide an error.
                config=Config(
                    read_timeout=POLL_WAIT_S + 30,
                    connect_timeout=5,
                    retries={"max_attempts": 1, "mode": "standard"},
                ),
            )
        return self._clients[service]

    @property
    def sfn(self) -> Any:
        return self.client("stepfunctions")

    @property
    def ddb(self) -> Any:
        return self.client("dynamodb")

    @property
    def logs(self) -> Any:
        return self.client("logs")

    @property
    def secrets(self) -> Any:
        return self.client("secretsmanager")

    @property
    def sns(self) -> Any:
        return self.client("sns")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def autoscaling(self) -> Any:
        return self.client("autoscaling")


@pytest.fixture(scope="session")
def _aws_clients(emulator: EmulatorProcess) -> AwsClients:
    return AwsClients(emulator.endpoint_url)


@pytest.fixture
def aws(_aws_clients: AwsClients) -> AwsClients:
    """boto3 clients bound to the session's emulator (see `AwsClients`)."""
    return _aws_clients


@pytest.fixture
def uid() -> str:
    """A short unique string for names of resources a test creates."""
    return uuid.uuid4().hex[:10]
