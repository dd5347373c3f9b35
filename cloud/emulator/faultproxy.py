"""A TCP proxy on 127.0.0.1 that breaks the connection between an agent and the emulator on
purpose: the network faults the agent must survive, made on demand and counted.

    proxy = FaultProxy(target_port=emulator.port)
    proxy.start()                   # proxy.port: point AWS_ENDPOINT_URL at it
    proxy.cut()                     # the network is gone: nothing passes either way
    proxy.restore()                 # back; connections caught in the cut are reset
    proxy.set_delay(2.0)            # every response waits 2 s
    proxy.set_reset_rate(0.05)      # 5 % of responses are lost: the connection is reset
                                    # after the request reached the emulator
    proxy.stop()

A cut behaves like a partition, not like a refused connection: connections are accepted and
then nothing comes back, so clients wait out their timeouts, as they would on a real network.
A reset response is the nastiest fault for a client: the service acted on the request, the
client never learns it and retries, so the effect happens twice unless the call is idempotent.
`stats` counts every fault injected. Thread-safe; the proxy runs its own event loop in a
daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Final

CHUNK_BYTES: Final = 64 * 1024


@dataclass
class ProxyStats:
    connections: int = 0
    cuts: int = 0
    cut_connections: int = 0  # connections caught in a cut (reset at the restore)
    responses_dropped: int = 0  # responses lost on purpose (connection reset)
    responses_delayed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    frozen: bool = False  # caught in a cut: nothing more is forwarded
    awaiting_response: bool = False


class FaultProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`, with faults on demand."""

    def __init__(self, target_port: int, *, seed: int | None = None, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._cut = False
        self._delay_s = 0.0
        self._reset_rate = 0.0
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    # Control (any thread).

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Partition: every open connection freezes, new ones are accepted and ignored."""
        self._call(self._do_cut)

    def restore(self) -> None:
        """End the partition; the connections it froze are reset, as a real network's would
        have timed out by then."""
        self._call(self._do_restore)

    def set_delay(self, delay_s: float) -> None:
        """Hold every response this long before passing it on (0: no delay)."""
        self._delay_s = delay_s

    def set_reset_rate(self, rate: float) -> None:
        """Reset this share of connections when their response arrives: the request was
        served, the client never gets the answer."""
        self._reset_rate = rate

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # The event loop's side.

    def _call(self, fn: object) -> None:
        assert self._loop is not None
        done = threading.Event()

        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        await self._stopping.wait()
        server.close()
        for connection in list(self._connections):
            self._close(connection, reset=True)
        # Aborted connections end their handlers; cancel only what is still stuck after that.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    def _count(self, kind: str) -> None:
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1

    def _do_cut(self) -> None:
        if not self._cut:
            self._cut = True
            self.stats.cuts += 1
            self._count("cut")
        for connection in self._connections:
            connection.frozen = True

    def _do_restore(self) -> None:
        self._cut = False
        for connection in list(self._connections):
            if connection.frozen:
                self.stats.cut_connections += 1
                self._close(connection, reset=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(client=writer, frozen=self._cut)
        self._connections.add(connection)
        self.stats.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            if connection.frozen:
                await reader.read()  # hold it open, unanswered, until the client gives up
                return
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            connection.server = upstream
            await asyncio.gather(
                self._pump(reader, upstream, connection, response=False),
                self._pump(upstream_reader, writer, connection, response=True),
            )
        except (ConnectionError, OSError):
            pass
        finally:
            self._close(connection, reset=False)
            self._handlers.discard(handler)
            for side in (connection.client, connection.server):
                if side is not None:
                    with contextlib.suppress(ConnectionError, OSError):
                        await side.wait_closed()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        connection: _Connection,
        *,
        response: bool,
    ) -> None:
        while data := await source.read(CHUNK_BYTES):
            if connection.frozen:
                continue  # a partition: swallow everything
            if not response:
                connection.awaiting_response = True
            elif connection.awaiting_response:
                # The first bytes of a response (connections are kept alive: many per one).
                connection.awaiting_response = False
                if self._reset_rate and self._rng.random() < self._reset_rate:
                    self.stats.responses_dropped += 1
                    self._count("response_dropped")
                    self._close(connection, reset=True)
                    return
                if self._delay_s:
                    self.stats.responses_delayed += 1
                    await asyncio.sleep(self._delay_s)
                    if connection.frozen:
                        continue
            sink.write(data)
            await sink.drain()
        if not connection.frozen and sink.can_write_eof():
            sink.write_eof()

    def _close(self, connection: _Connection, *, reset: bool) -> None:
        self._connections.discard(connection)
        for writer in (connection.client, connection.server):
            if writer is None:
                continue
            if reset:
                _reset(writer)
            else:
                writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: the peer sees `connection reset by peer`."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
