"""systemd's notify protocol, spoken over real AF_UNIX datagram sockets: the Notifier itself,
the watchdog running on the event loop, and the real `rsql-agent run` process under a test
that plays systemd (NOTIFY_SOCKET, WATCHDOG_USEC, SIGTERM)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    agent_events,
    agent_process,
    agent_settings,
    finished,
    make_stack,
    start,
    task_input,
    wait_for,
    write_script,
)

from agent import systemd
from agent.app import running


class NotifySocket:
    """What systemd listens on: a bound datagram socket; every message received is kept with
    the monotonic time it arrived, as a dict of its assignments."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self._sock.bind(bind_to)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append((time.monotonic(), fields))

    def values(self, key: str) -> list[str]:
        return [fields[key] for _, fields in list(self.messages) if key in fields]

    def times(self, key: str) -> list[float]:
        return [at for at, fields in list(self.messages) if key in fields]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    listener = NotifySocket(f"@rsql-agent-test-{uuid.uuid4().hex}")
    yield listener
    listener.close()


def test_notifier_speaks_to_a_path_and_to_an_abstract_name(
    notify_socket: NotifySocket, abstract_socket: NotifySocket
) -> None:
    for listener in (notify_socket, abstract_socket):
        notifier = systemd.Notifier(listener.address)
        assert notifier.send("READY=1", "STATUS=ready") is True
        wait_for(lambda listener=listener: listener.messages, 5, "a datagram")
        assert listener.messages[0][1] == {"READY": "1", "STATUS": "ready"}
        notifier.close()


def test_without_a_socket_nothing_is_sent_and_a_dead_socket_never_raises(tmp_path: Path) -> None:
    assert systemd.Notifier(None).send("READY=1") is False
    gone = systemd.Notifier(str(tmp_path / "nobody-listens.sock"))
    try:
        assert gone.send("READY=1") is False
        assert gone.send("STATUS=x") is False
    finally:
        gone.close()
    unsupported = systemd.Notifier("vsock:2:1234")
    assert not unsupported.enabled and unsupported.send("READY=1") is False


def test_from_environment_takes_the_variables_out_of_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = systemd.Notifier.from_environment(env)
    assert notifier.address == "@x" and notifier.watchdog_interval_s == 2.0
    assert env == {}  # scripts inherit the environment: they must not see these
    other_process = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
    assert systemd.Notifier.from_environment(other_process).watchdog_interval_s is None
    assert systemd.Notifier.from_environment({"WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    assert not systemd.Notifier.from_environment({}).enabled


@pytest.mark.usefixtures("emulator")
def test_the_watchdog_pings_from_the_event_loop_and_stops_when_it_is_wedged(
    aws: Any, uid: str, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    settings = agent_settings(tmp_path, make_stack(aws, uid))
    notifier = systemd.Notifier(notify_socket.address, watchdog_usec=200_000)  # ping every 0.1 s
    wedge_s = 1.5

    async def scenario() -> tuple[float, float]:
        async with running(settings) as agent, systemd.supervising(agent, notifier):
            await asyncio.to_thread(wait_for, lambda: notify_socket.values("READY"), 10, "READY")
            await asyncio.to_thread(
                wait_for, lambda: len(notify_socket.times("WATCHDOG")) >= 3, 10, "pings"
            )
            wedged_at = time.monotonic()
            time.sleep(wedge_s)  # noqa: ASYNC251 - the point: a wedged loop
            count = len(notify_socket.times("WATCHDOG"))
            await asyncio.to_thread(
                wait_for, lambda: len(notify_socket.times("WATCHDOG")) > count + 2, 10, "pings"
            )
            return wedged_at, wedged_at + wedge_s

    wedged_at, unwedged_at = asyncio.run(scenario())
    pings = notify_socket.times("WATCHDOG")
    assert not [at for at in pings if wedged_at + 0.05 < at < unwedged_at - 0.05]
    before = [at for at in pings if at <= wedged_at]
    assert len(before) >= 3 and max(b - a for a, b in itertools.pairwise(before)) < 1.0
    assert [at for at in pings if at >= unwedged_at]


@pytest.mark.usefixtures("emulator")
def test_the_agent_process_reports_ready_status_and_a_drain_that_extends_the_stop_timeout(
    aws: Any, uid: str, tmp_path: Path, abstract_socket: NotifySocket
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, drain_timeout_s=30)
    release = tmp_path / "release"
    write_script(
        settings.script_dir,
        "job.sh",
        f'echo "notify=[${{NOTIFY_SOCKET:-}}] watchdog=[${{WATCHDOG_USEC:-}}]"\n'
        f"while [ ! -e {release} ]; do sleep 0.05; done",
    )
    env = {"NOTIFY_SOCKET": abstract_socket.address, "WATCHDOG_USEC": "2000000"}
    process = agent_process(settings, tmp_path, env)
    try:
        wait_for(lambda: abstract_socket.values("READY"), 30, "READY=1")
        assert "0/4 jobs running, polling" in abstract_socket.values("STATUS")
        arn = start(aws, stack, task_input(uid, "job.sh"), f"exec-{uid}")
        wait_for(lambda: "1/4 jobs running, polling" in abstract_socket.values("STATUS"))
        ready_at = abstract_socket.times("READY")[0]
        wait_for(lambda: len([t for t in abstract_socket.times("WATCHDOG") if t > ready_at]) >= 3)
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: abstract_socket.values("STOPPING"), 10, "STOPPING=1")
        assert "draining: 1 job left" in abstract_socket.values("STATUS")
        wait_for(lambda: abstract_socket.values("EXTEND_TIMEOUT_USEC"), 10, "EXTEND_TIMEOUT_USEC")
        release.touch()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert finished(aws, arn)["status"] == "SUCCEEDED"
    statuses = abstract_socket.values("STATUS")
    assert statuses[0].startswith("starting")
    assert statuses[-3:] == ["draining: 1 job left", "draining: 0 jobs left", "stopped"]
    stopping_at = abstract_socket.times("STOPPING")[0]
    # WATCHDOG_USEC=2 s: pinged every second, never a gap systemd would act on.
    pings = abstract_socket.times("WATCHDOG")
    assert max(b - a for a, b in itertools.pairwise(pings)) < 2.0
    # Extensions were asked for while starting (before READY) and while draining (after).
    extends = abstract_socket.times("EXTEND_TIMEOUT_USEC")
    assert extends[0] < ready_at and extends[-1] > stopping_at
    assert set(abstract_socket.values("EXTEND_TIMEOUT_USEC")) == {str(systemd.EXTEND_USEC)}
    # The script did not inherit the service's notify socket or watchdog.
    output = (settings.log_dir / f"wf-{uid}" / f"exec-{uid}" / "job.sh.log").read_text()
    assert "notify=[] watchdog=[]" in output
    assert [e["event"] for e in agent_events(tmp_path)][-1] == "agent_stopped"


@pytest.mark.usefixtures("emulator")
def test_a_busy_agent_keeps_pinging_the_watchdog(
    aws: Any, uid: str, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    stack = make_stack(aws, uid)
    settings = agent_settings(tmp_path, stack, concurrency=2)
    # Two jobs printing 1 KB lines as fast as they can for 5 s (bounded by time, not by
    # volume, so a fast machine still keeps the agent busy for longer than the ping period):
    # the event loop pumps their output into files and ships it to CloudWatch all along.
    line = "x" * 1000
    write_script(
        settings.script_dir,
        "chatty.sh",
        "end=$((SECONDS + 5))\n"
        f"while [ $SECONDS -lt $end ]; do yes {line} | head -n 100; sleep 0.01; done",
    )
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"}
    process = agent_process(settings, tmp_path, env)
    try:
        wait_for(lambda: notify_socket.values("READY"), 30, "READY=1")
        runs = []
        for n in (1, 2):
            name = f"exec-{uid}-{n}"
            task = task_input(uid, "chatty.sh", workflow_execution_id=name, timeout_seconds=120)
            runs.append(start(aws, stack, task, name))
        statuses = [finished(aws, arn, timeout_s=120)["status"] for arn in runs]
        busy_until = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert statuses == ["SUCCEEDED", "SUCCEEDED"]
    busy_from = next(
        at
        for at, fields in notify_socket.messages
        if fields.get("STATUS", "").startswith(("1/2", "2/2"))
    )
    assert busy_until - busy_from > 3  # long enough to need pings meanwhile
    pings = [at for at in notify_socket.times("WATCHDOG") if busy_from - 2 <= at <= busy_until]
    # WATCHDOG_USEC=2 s: a ping every second, and never a gap systemd would restart it for.
    assert len(pings) >= 2 and max(b - a for a, b in itertools.pairwise(pings)) < 2.0
