"""Helpers for the fleet tests: an Auto Scaling group in the emulator, the record of its
lifecycle actions, and a fake EC2 instance metadata service (IMDSv2) on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloud.emulator.autoscaling import CALLS_PATH

IMDS_TOKEN = "fake-imds-session-token"
HOOK_TAG = "rsql:lifecycle-hook"


@dataclass(frozen=True)
class Group:
    name: str
    hook: str
    instance_id: str


def make_group(aws: Any, uid: str, *, hook: bool = True, tags: bool = True) -> Group:
    """An Auto Scaling group of one instance, with a termination lifecycle hook (named by the
    group's `rsql:lifecycle-hook` tag, propagated to the instance) unless `hook=False`."""
    template = f"t-{uid}"
    aws.client("ec2").create_launch_template(
        LaunchTemplateName=template,
        LaunchTemplateData={"ImageId": "ami-12345678", "InstanceType": "t3.micro"},
    )
    name, hook_name = f"g-{uid}", f"drain-{uid}"
    group_tags = [{"Key": HOOK_TAG, "Value": hook_name, "PropagateAtLaunch": True}] if tags else []
    aws.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": template},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
        Tags=group_tags,
    )
    if hook:
        aws.autoscaling.put_lifecycle_hook(
            AutoScalingGroupName=name,
            LifecycleHookName=hook_name,
            LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
            HeartbeatTimeout=300,
            DefaultResult="CONTINUE",
        )
    [instance] = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"
    ][0]["Instances"]
    return Group(name, hook_name, instance["InstanceId"])


def lifecycle_calls(aws: Any, group: Group) -> list[dict[str, Any]]:
    """The emulator's record of RecordLifecycleActionHeartbeat / CompleteLifecycleAction
    calls for `group`, oldest first."""
    with urllib.request.urlopen(aws.endpoint_url + CALLS_PATH, timeout=10) as response:
        record = json.loads(response.read())
    return [call for call in record["calls"] if call["group"] == group.name]


def instance_state(aws: Any, group: Group) -> str | None:
    """The instance's lifecycle state in its group, None once it has left the group."""
    instances = aws.autoscaling.describe_auto_scaling_instances(InstanceIds=[group.instance_id])
    rows = instances["AutoScalingInstances"]
    return rows[0]["LifecycleState"] if rows else None


# -- a fake instance metadata service -----------------------------------------------------------

# An answer: (status, body bytes), or a callable that writes a raw response itself (garbage).
Answer = tuple[int, bytes] | Callable[[BaseHTTPRequestHandler], None]


@dataclass
class FakeImds:
    """IMDSv2 with HttpTokens=required: PUT /latest/api/token first, then GETs carrying it.
    `answers` maps a path under /latest/meta-data/ to its answer (404 when absent); tests
    change it while the agent runs."""

    url: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, path: str, answer: Answer | str | None) -> None:
        with self.lock:
            if answer is None:
                self.answers.pop(path, None)
            elif isinstance(answer, str):
                self.answers[path] = (200, answer.encode())
            else:
                self.answers[path] = answer

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for _, p in self.requests if p == "/latest/meta-data/" + path)


def _handler(imds: FakeImds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            with imds.lock:
                imds.requests.append(("PUT", self.path))
            if self.path == "/latest/api/token" and self.headers.get(
                "X-aws-ec2-metadata-token-ttl-seconds"
            ):
                self._answer(200, IMDS_TOKEN.encode())
            else:
                self._answer(400, b"bad request")

        def do_GET(self) -> None:
            with imds.lock:
                imds.requests.append(("GET", self.path))
                answer = imds.answers.get(self.path.removeprefix("/latest/meta-data/"))
            if self.headers.get("X-aws-ec2-metadata-token") != IMDS_TOKEN:
                self._answer(401, b"unauthorized")
            elif answer is None:
                self._answer(404, b"not found")
            elif callable(answer):
                answer(self)
            else:
                self._answer(*answer)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def fake_imds(instance_id: str = "i-0123456789abcdef0") -> Iterator[FakeImds]:
    """A fake IMDSv2 on 127.0.0.1 (never the real 169.254.169.254) for the block."""
    imds = FakeImds()
    imds.set("instance-id", instance_id)
    imds.set("autoscaling/target-lifecycle-state", "InService")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(imds))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    imds.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield imds
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
