"""A TCP relay between the agent and the emulator that counts API calls by their
`X-Amz-Target` header, with the time each was sent: the service's view of what a host calls,
independent of the agent's own counters."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections import Counter
from typing import Final

_TARGET: Final = re.compile(rb"X-Amz-Target: [A-Za-z0-9_]+\.([A-Za-z]+)", re.IGNORECASE)


class CallCounter:
    """Listens on 127.0.0.1 and relays every connection to `upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._calls: list[tuple[float, str]] = []
        threading.Thread(target=self._accept, daemon=True, name="counter").start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        """Calls by API sent between two `time.monotonic()` readings."""
        with self._lock:
            return Counter(api for moment, api in self._calls if since <= moment < until)

    def first(self, api: str) -> float | None:
        """When the first call to `api` was sent (`time.monotonic()`), if one was."""
        with self._lock:
            return next((moment for moment, name in self._calls if name == api), None)

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests:
                    # A header never spans two reads in practice: botocore sends each
                    # request's headers in one write.
                    found = [(time.monotonic(), m.decode()) for m in _TARGET.findall(data)]
                    if found:
                        with self._lock:
                            self._calls.extend(found)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
