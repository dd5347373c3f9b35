"""The minimal reference worker: what running activity tasks costs at the least.

Threaded boto3, one client: each thread polls the activity, runs the task's script with
`subprocess.run` and sends SendTaskSuccess. Nothing else: no audit rows, no logs shipped, no
heartbeats, no journal, no input validation. It is the yardstick the agent's per-job CPU and
throughput are measured against in `bench.dispatch`.

It takes exactly `--jobs` tasks and then stops: every thread claims one of the `--jobs`
tickets before it polls, so no poll is left open when it exits (a poll abandoned mid-flight
could still be handed a task by the service, which would then be lost until its timeout).

    python -m bench.reference_worker --activity-arn ARN --script PATH --jobs 500 --threads 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading

import boto3
from botocore.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference_worker")
    parser.add_argument("--activity-arn", required=True)
    parser.add_argument("--script", required=True)
    parser.add_argument("--jobs", type=int, required=True, help="tasks to take, then stop")
    parser.add_argument("--threads", type=int, default=32)
    options = parser.parse_args(argv)
    client = boto3.client(
        "stepfunctions",
        config=Config(
            read_timeout=70, max_pool_connections=options.threads + 2, retries={"mode": "standard"}
        ),
    )
    tickets = iter(range(options.jobs))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if next(tickets, None) is None:
                    return
            while not (task := client.get_activity_task(activityArn=options.activity_arn)).get(
                "taskToken"
            ):
                pass  # an empty long poll: this ticket's task is still to come
            args = json.loads(task["input"]).get("args", [])
            result = subprocess.run(
                ["/bin/bash", options.script, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                env=os.environ,
            )
            client.send_task_success(
                taskToken=task["taskToken"], output=json.dumps({"exit_code": result.returncode})
            )

    threads = [threading.Thread(target=work) for _ in range(options.threads)]
    for thread in threads:
        thread.start()
    print("reference_worker_started", flush=True)
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
