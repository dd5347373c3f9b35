"""A headless Chromium for tests, driven over the DevTools protocol on a pipe.

`--remote-debugging-pipe` makes Chromium read protocol messages (JSON, each ended by a NUL)
on fd 3 and write its answers and events on fd 4: no port, no websocket library, nothing
listening. The child gets the pipes at fds 3 and 4 through posix_spawn's file actions (safe in
a process that runs agent threads, unlike a preexec_fn), in its own process group so a stuck
browser is killed whole. Flags keep it off every network: no background requests, no
component updates, and a host resolver that resolves nothing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
)


class BrowserError(Exception):
    pass


@dataclass
class Chromium:
    """One browser process; use as a context manager."""

    user_data_dir: Path
    timeout_s: float = 30.0
    events: list[dict[str, Any]] = field(default_factory=list)
    _pid: int = 0
    _to_browser: int = -1
    _from_browser: int = -1
    _buffer: bytes = b""
    _next_id: int = 0

    def __enter__(self) -> Chromium:
        self.user_data_dir.mkdir(parents=True, exist_ok=True)
        browser_reads, self._to_browser = os.pipe()
        self._from_browser, browser_writes = os.pipe()
        log = str(self.user_data_dir.parent / f"{self.user_data_dir.name}.stderr")
        argv = [str(CHROMIUM), *FLAGS, f"--user-data-dir={self.user_data_dir}"]
        self._pid = os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, browser_reads, 3),
                (os.POSIX_SPAWN_DUP2, browser_writes, 4),
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            ],
            setpgroup=0,
        )
        os.close(browser_reads)
        os.close(browser_writes)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):  # already gone
            self._send("Browser.close", {}, None)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self._pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        else:
            os.killpg(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
        os.close(self._to_browser)
        os.close(self._from_browser)

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its result (events met meanwhile go to `events`)."""
        sent = self._send(method, params or {}, session)
        while True:
            message = self._receive()
            if message.get("id") == sent:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """The next event `method` of a page (one already received counts)."""
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(index)
            self.events.append(self._receive())

    def _send(self, method: str, params: dict[str, Any], session: str | None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"no answer from Chromium in {self.timeout_s} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError("Chromium closed the pipe (see its .stderr file)")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def open(self, url: str, width: int = 1280, height: int = 800) -> Page:
        """A new tab showing `url`, loaded (its load event fired), every request recorded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, attached["sessionId"])
        for domain in ("Page", "Network", "Runtime"):
            page.call(f"{domain}.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        page.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", page.session)
        return page


@dataclass
class Page:
    browser: Chromium
    session: str

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(self.browser.call(method, params, self.session))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-able), evaluated in the page."""
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression[:60]}...: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def hover(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    def requested_urls(self) -> list[str]:
        """Every URL the page asked for since it opened."""
        return [
            event["params"]["request"]["url"]
            for event in self.browser.events
            if event.get("method") == "Network.requestWillBeSent"
            and event.get("sessionId") == self.session
        ]

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (not only the viewport)."""
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
