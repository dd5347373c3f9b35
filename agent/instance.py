"""Who this host is: the EC2 instance id, from settings or from instance metadata (IMDSv2).

IMDSv2 is a PUT for a session token, then a GET with that token; IMDSv1 (a plain GET) is off
on well-configured instances, so it is not tried. The endpoint is a setting only so a test can
point it at a fake on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from typing import Final

import structlog

from agent.settings import DEFAULT_IMDS_ENDPOINT, Settings

log = structlog.get_logger(__name__)

# Names of the IMDSv2 protocol, not credentials.
TOKEN_PATH: Final = "/latest/api/token"  # noqa: S105
INSTANCE_ID_PATH: Final = "/latest/meta-data/instance-id"
TOKEN_TTL_HEADER: Final = "X-aws-ec2-metadata-token-ttl-seconds"  # noqa: S105
TOKEN_HEADER: Final = "X-aws-ec2-metadata-token"  # noqa: S105
TOKEN_TTL_S: Final = 60


class InstanceMetadataError(Exception):
    """The metadata service did not answer with an instance id."""


def fetch_instance_id(endpoint_url: str, timeout_s: float) -> str:
    """The instance id from IMDSv2 at `endpoint_url`; raises InstanceMetadataError."""
    base = endpoint_url.rstrip("/")
    # No proxies: a proxy would forward the metadata request off the host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        # The settings only admit http:// endpoints, so no file: or custom scheme here.
        put = urllib.request.Request(  # noqa: S310
            base + TOKEN_PATH, method="PUT", headers={TOKEN_TTL_HEADER: str(TOKEN_TTL_S)}
        )
        with opener.open(put, timeout=timeout_s) as response:
            token: str = response.read().decode()
        get = urllib.request.Request(base + INSTANCE_ID_PATH, headers={TOKEN_HEADER: token})  # noqa: S310
        with opener.open(get, timeout=timeout_s) as response:
            instance_id: str = response.read().decode().strip()
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        raise InstanceMetadataError(f"instance metadata at {base}: {exc}") from None
    if not instance_id.startswith("i-"):
        raise InstanceMetadataError(f"instance metadata at {base}: not an instance id")
    return instance_id


def metadata_disabled(settings: Settings) -> bool:
    """The standard AWS switch turns off the real endpoint (a test's fake stays reachable)."""
    disabled = os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"
    return disabled and settings.imds_endpoint_url.rstrip("/") == DEFAULT_IMDS_ENDPOINT


async def resolve_instance_id(settings: Settings) -> str:
    """RSQL_AGENT_INSTANCE_ID if set, else IMDSv2, else the worker name (off EC2 the host
    name is the best identity there is; a warning says so)."""
    if settings.instance_id:
        return settings.instance_id
    if not metadata_disabled(settings):
        try:
            return await asyncio.to_thread(
                fetch_instance_id, settings.imds_endpoint_url, settings.imds_timeout_s
            )
        except InstanceMetadataError as exc:
            log.warning("instance_id_unavailable", reason=str(exc))
    log.warning("instance_id_from_worker_name", instance_id=settings.worker_name)
    return settings.worker_name
