"""The fleet's EC2 user data: a bash script that installs the agent, its settings and the scripts
at first boot, with `deploy/install.sh` (the installer operators run by hand) and the systemd
unit carried inside it, so a plain Amazon Linux 2023 image needs nothing baked in. Both ship in
the package (cloud/host/), so `rsql-cloud fleet` works from a wheel as from a checkout.

    agent source   s3://bucket/key.whl (aws s3 cp), https://.../x.whl (curl), or anything pip
                   installs (a requirement such as `rsql-agent==0.1.0`, a path on the image)
    scripts        s3://bucket/prefix/ (aws s3 sync), or a directory already on the image

The settings file (`/etc/rsql-agent/agent.env`) names the stack's activity, tables, log groups,
secret, the host's concurrency and the group and termination hook the agent drains for. S3
sources need the AWS CLI on the image (Amazon Linux has it) and the instance role's bootstrap
policy (cloud/iam.py).
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from cloud.aws import CloudError

# What the user data carries ships inside the package (cloud/host/, package data), so a
# pip-installed cloud kit needs no checkout; deploy/install.sh and systemd/ link to these files.
_HOST: Final[Traversable] = resources.files("cloud") / "host"
INSTALLER: Final = _HOST / "install.sh"
UNIT: Final = _HOST / "rsql-agent.service"
ENV_EXAMPLE: Final = _HOST / "agent.env.example"
# EC2 takes at most 16 KB of user data (before base64).
MAX_USER_DATA_BYTES: Final = 16 * 1024
DIST: Final = "/opt/rsql-agent-dist"
SCRIPT_DIR: Final = "/opt/rsql-agent/scripts"


@dataclass(frozen=True)
class Boot:
    """What a host installs at boot."""

    agent_source: str
    scripts: str
    settings: dict[str, str]  # agent.env, KEY=VALUE

    @property
    def s3_sources(self) -> list[str]:
        return [s for s in (self.agent_source, self.scripts) if s.startswith("s3://")]


def render(boot: Boot) -> str:
    """The user data script."""
    env = "".join(f"{key}={value}\n" for key, value in boot.settings.items())
    parts = [
        _HEADER,
        _heredoc(f"{DIST}/deploy/install.sh", _read(INSTALLER)),
        _heredoc(f"{DIST}/systemd/rsql-agent.service", _read(UNIT)),
        _heredoc(f"{DIST}/systemd/agent.env.example", _read(ENV_EXAMPLE)),
        _heredoc(f"{DIST}/agent.env", env),
        f"chmod 0755 {DIST}/deploy/install.sh\n",
        _fetch_agent(boot.agent_source),
        _fetch_scripts(boot.scripts),
        _INSTALL,
    ]
    text = "".join(parts)
    size = len(text.encode())
    if size > MAX_USER_DATA_BYTES:
        raise CloudError(f"the user data is {size} bytes, EC2 takes at most {MAX_USER_DATA_BYTES}")
    return text


def encoded(text: str) -> str:
    """As a launch template carries it."""
    return base64.b64encode(text.encode()).decode()


_HEADER: Final = f"""#!/usr/bin/env bash
# rsql-agent fleet host: written by `rsql-cloud fleet deploy`; log in /var/log/cloud-init-output.log
set -euo pipefail
umask 022
if command -v dnf >/dev/null; then
    dnf install -y python3.11 python3.11-pip
else
    apt-get update && apt-get install -y python3 python3-venv curl
fi
mkdir -p {DIST}/deploy {DIST}/systemd {DIST}/scripts
"""

_INSTALL: Final = f"""{DIST}/deploy/install.sh --source "$AGENT" --scripts "$SCRIPTS" \\
    --env {DIST}/agent.env
"""


def _fetch_agent(source: str) -> str:
    quoted = shlex.quote(source)
    if source.startswith("s3://"):
        target = shlex.quote(f"{DIST}/{source.rsplit('/', 1)[-1]}")
        return f"aws s3 cp {quoted} {target}\nAGENT={target}\n"
    if source.startswith("https://"):
        target = shlex.quote(f"{DIST}/{source.rsplit('/', 1)[-1].split('?', 1)[0]}")
        return f"curl -fsSL --retry 5 -o {target} {quoted}\nAGENT={target}\n"
    return f"AGENT={quoted}\n"


def _fetch_scripts(source: str) -> str:
    if source.startswith("s3://"):
        prefix = shlex.quote(source if source.endswith("/") else f"{source}/")
        return f"aws s3 sync --no-progress {prefix} {DIST}/scripts\nSCRIPTS={DIST}/scripts\n"
    return f"SCRIPTS={shlex.quote(source)}\n"


def _heredoc(path: str, content: str) -> str:
    marker = "RSQL_EOF"
    if f"\n{marker}\n" in f"\n{content}":
        raise CloudError(f"{path}: its text holds the heredoc marker {marker}")
    body = content if content.endswith("\n") else f"{content}\n"
    return f"cat > {shlex.quote(path)} <<'{marker}'\n{body}{marker}\n"


def _read(path: Traversable) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise CloudError(
            f"cloud/host/{path.name}: cannot read it ({exc.strerror}); the rsql-agent package "
            "is incomplete, reinstall it"
        ) from None
