"""Who this host is: the EC2 instance id, from settings or from instance metadata (IMDSv2)."""

from __future__ import annotations

import asyncio

import structlog

from agent.imds import Imds, ImdsError, metadata_disabled
from agent.settings import Settings

log = structlog.get_logger(__name__)


class InstanceMetadataError(Exception):
    """The metadata service did not answer with an instance id."""


def fetch_instance_id(endpoint_url: str, timeout_s: float) -> str:
    """The instance id from IMDSv2 at `endpoint_url`; raises InstanceMetadataError."""
    imds = Imds(endpoint_url, timeout_s)
    try:
        instance_id = (imds.get("instance-id") or "").strip()
    except ImdsError as exc:
        raise InstanceMetadataError(str(exc)) from None
    if not instance_id.startswith("i-") or not instance_id.isprintable():
        raise InstanceMetadataError(f"instance metadata at {imds.base}: not an instance id")
    return instance_id


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
