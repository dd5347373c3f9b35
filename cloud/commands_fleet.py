"""What `rsql-cloud fleet deploy|status|destroy` do once their arguments are parsed (the
other commands are in commands.py; the work itself in fleet.py and fleet_status.py)."""

from __future__ import annotations

import argparse
import json
import sys

from cloud.commands import _aws, confirm_deletion


def fleet_deploy(args: argparse.Namespace) -> int:
    """`fleet deploy`: check the input, plan, apply (or print the plan / the user data)."""
    from cloud import fleet

    spec = fleet.FleetSpec(
        subnets=args.subnets,
        instance_types=args.instance_types,
        agent_source=args.agent_source,
        scripts=args.scripts,
        min_size=args.min_size,
        max_size=args.max_size,
        spot=args.spot,
        on_demand_base=args.on_demand_base,
        concurrency=args.concurrency,
        image_id=args.image_id,
        security_groups=args.security_groups,
        secret_id=args.secret_id,
    )
    names = args.stack_name
    if args.print_user_data:
        from cloud.deploy import DesiredStack
        from cloud.userdata import render

        desired = fleet.DesiredFleet(DesiredStack(names, _aws().account), spec)
        sys.stdout.write(render(desired.boot))
        return 0
    if args.dry_run:
        print(f"Plan for the fleet of stack {names.stack_name} (dry run, nothing is changed):")
    plan = fleet.deploy_fleet(_aws(), names, spec, dry_run=args.dry_run)
    if args.dry_run:
        for step in plan:
            print(f"  {step.message}")
    if not plan:
        print(f"No changes: fleet {names.autoscaling_group} is up to date.")
    elif not args.dry_run:
        print(f"Fleet {names.autoscaling_group} deployed (`rsql-cloud fleet status` shows it).")
    return 0


def fleet_status(args: argparse.Namespace) -> int:
    """`fleet status`: capacity, hosts, hook, scaling, recent activity."""
    from cloud.fleet_status import fleet_status, status_lines

    status = fleet_status(_aws(), args.stack_name)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for line in status_lines(status):
            print(line)
    return 0


def fleet_destroy(args: argparse.Namespace) -> int:
    """`fleet destroy`: print the plan, ask (or take --yes), delete."""
    from cloud import fleet
    from cloud.deploy import execute

    names = args.stack_name
    aws = _aws()
    plan = fleet.destroy_plan(aws, names, force=args.force)
    if not plan:
        print(f"Nothing to delete: stack {names.stack_name} has no fleet.")
        return 0
    heading = f"Destroying the fleet of stack {names.stack_name}:"
    if (code := confirm_deletion(heading, plan, args)) is not None:
        return code
    execute(aws, plan, lambda message: print(f"{message} ...", flush=True))
    print(f"Fleet {names.autoscaling_group} destroyed.")
    return 0
