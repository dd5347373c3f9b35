"""The parser of `rsql-cloud fleet deploy|status|destroy` (cloud/cli.py holds the rest)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cloud import commands_fleet as handlers
from cloud.names import DEFAULT_SECRET_ID


def add_fleet(commands: Any, group: Callable[..., Any], command: Callable[..., Any]) -> None:
    """`fleet` and its verbs; `group` and `command` are cli.py's parser factories."""
    verbs = group(
        commands,
        "fleet",
        "the Auto Scaling group of agent hosts: deploy, status, destroy",
        "rsql-cloud fleet status",
    )
    deploy = command(
        verbs,
        "deploy",
        handlers.fleet_deploy,
        "create or update the fleet (role, launch template, group, drain hook, scaling); "
        "a second run with the same options changes nothing",
        "rsql-cloud fleet deploy --subnets subnet-0a1b2c3d,subnet-4e5f6a7b "
        "--instance-types m6i.large,m5.large --max 6 --spot "
        "--agent-source s3://etl-dist/rsql_agent-0.1.0-py3-none-any.whl "
        "--scripts s3://etl-dist/scripts/",
    )
    _deploy_options(deploy)
    status = command(
        verbs,
        "status",
        handlers.fleet_status,
        "show the group's capacity, hosts, drain hook, scaling alarms and recent activity",
        "rsql-cloud fleet status --json",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    destroy = command(
        verbs,
        "destroy",
        handlers.fleet_destroy,
        "delete the fleet: scale to 0 (every host drains its jobs), then delete what deploy made",
        "rsql-cloud fleet destroy --yes",
    )
    destroy.add_argument("--yes", action="store_true", help="do not ask (required off a tty)")
    destroy.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    destroy.add_argument(
        "--force",
        action="store_true",
        help="terminate the hosts at once (running jobs are killed and retried elsewhere)",
    )


def _deploy_options(deploy: Any) -> None:
    add = deploy.add_argument
    add("--subnets", type=_csv, required=True, metavar="ID,ID", help="subnet ids (one VPC)")
    add(
        "--instance-types",
        type=_csv,
        required=True,
        metavar="TYPE,TYPE",
        help="instance types, in order of preference, of one CPU architecture",
    )
    add("--min", type=int, default=0, dest="min_size", help="fewest hosts (default 0)")
    add("--max", type=int, default=4, dest="max_size", help="most hosts (default 4)")
    add("--spot", action="store_true", help="run hosts on Spot beyond --on-demand-base")
    add(
        "--on-demand-base",
        type=int,
        default=0,
        metavar="N",
        help="with --spot: this many hosts always on demand (default 0)",
    )
    add(
        "--concurrency",
        type=int,
        default=8,
        metavar="N",
        help="jobs at once per host (RSQL_AGENT_CONCURRENCY, default 8); one host's worth of "
        "work for scaling",
    )
    add(
        "--agent-source",
        required=True,
        metavar="SOURCE",
        help="what each host pip-installs: s3://bucket/key.whl, https://.../x.whl, or a pip "
        "requirement",
    )
    add(
        "--scripts",
        required=True,
        metavar="SOURCE",
        help="the RSQL scripts: s3://bucket/prefix/ (synced at boot) or an absolute path on "
        "the image",
    )
    add("--image-id", metavar="AMI", help="default: the latest Amazon Linux 2023")
    add(
        "--security-groups",
        type=_csv,
        default=(),
        metavar="ID,ID",
        help="default: the VPC's default security group",
    )
    add(
        "--secret-id",
        default=os.environ.get("RSQL_AGENT_SECRET_ID", DEFAULT_SECRET_ID),
        help="the Redshift connection secret "
        f"(default: $RSQL_AGENT_SECRET_ID or {DEFAULT_SECRET_ID})",
    )
    add("--dry-run", action="store_true", help="print the plan, change nothing")
    add("--print-user-data", action="store_true", help="print the hosts' user data and exit")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
