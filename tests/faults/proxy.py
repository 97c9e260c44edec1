"""A TCP proxy that breaks the network on purpose, for fault tests.

`tc netem` does not work on this kernel and the tests run unprivileged, so faults
are made in user space instead: a client connects to the proxy, the proxy connects
to the real server and copies bytes both ways, and the test decides what the copy
does (add latency, cap bandwidth, stall, reset, refuse).

A *stall* is what a partition looks like to TCP: nothing arrives and nothing fails,
connections stay open and new ones hang. Bytes read meanwhile are held, not dropped:
TCP would retransmit them, so when a partition heals before TCP gives up, they
arrive late. A *reset* is the other kind of partition, the one a restarted server or
a middlebox causes: open connections get an RST (SO_LINGER 0) and new ones are
reset at once.

Faults can hit only some clients: a `Selector` gets the client's address (host,
port) and says whether the fault applies to that connection, so one process's
connections can be cut while another's, through the same proxy, keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Final, Self, TypeAlias

logger = logging.getLogger(__name__)

Peer: TypeAlias = tuple[str, int]
Selector: TypeAlias = Callable[[Peer], bool]

CHUNK_BYTES: Final = 64 * 1024
# Chunks held per direction before the proxy stops reading: beyond this the kernel
# buffers fill and the sender blocks, as it would behind a slow or dead link.
QUEUE_CHUNKS: Final = 64
# Bandwidth is paced in slices this long, so a cap is smooth rather than bursty.
PACING_SECONDS: Final = 0.02
_RST_LINGER: Final = struct.pack("ii", 1, 0)


def every_client(_peer: Peer) -> bool:
    """The default selector: a fault hits every connection."""
    return True


class PartitionMode(StrEnum):
    """How a partition looks to the client."""

    STALL = "stall"  # packets blackholed: connections hang, nothing errors
    RESET = "reset"  # open connections reset, new ones reset at once


@dataclass(slots=True)
class ProxyStats:
    """What the proxy saw; tests print these with their results."""

    accepted: int = 0
    refused: int = 0
    reset: int = 0
    bytes_to_server: int = 0
    bytes_to_client: int = 0


@dataclass(eq=False, slots=True)
class _Link:
    """One client connection and its connection to the server."""

    peer: Peer
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    # Set while bytes may flow; cleared by a stall.
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    aborted: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


_EOF: Final = b""


class FaultProxy:
    """Forwards `host:port` to `upstream`; methods inject and heal faults.

    Runs in the caller's event loop: call `start()` (or use `async with`) and keep
    the loop free; anything blocking the loop stalls every connection.
    """

    def __init__(
        self, upstream: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._upstream = upstream
        self._host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._stall: Selector | None = None
        self._refuse: Selector | None = None
        self.latency = 0.0
        self.bandwidth: float | None = None
        self.stats = ProxyStats()

    @property
    def port(self) -> int:
        """The port clients connect to (known once started, or when given)."""
        if self._server is None:
            if self._requested_port:
                return self._requested_port
            raise RuntimeError("the proxy has no port yet: call start() first")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        """`host:port` for clients."""
        return f"{self._host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self._host, self._requested_port, reuse_address=True
        )

    async def stop(self) -> None:
        """Stop listening and reset every connection still open."""
        if self._server is not None:
            self._server.close()
        links = list(self._links)
        for link in links:
            self._abort(link)
        for task in [task for link in links for task in link.tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def stall(self, clients: Selector = every_client) -> None:
        """Stop forwarding for `clients`; their new connections hang unconnected."""
        self._stall = clients
        for link in self._links:
            if clients(link.peer):
                link.flowing.clear()

    def refuse(self, clients: Selector = every_client) -> None:
        """Reset new connections from `clients` as soon as they are accepted."""
        self._refuse = clients

    def reset(self, clients: Selector = every_client) -> int:
        """Reset the open connections of `clients` (RST both ways); return how many."""
        hit = [link for link in self._links if clients(link.peer)]
        for link in hit:
            self._abort(link)
        return len(hit)

    def partition(self, mode: PartitionMode, clients: Selector = every_client) -> None:
        """Cut `clients` off from the server until `heal()`."""
        match mode:
            case PartitionMode.STALL:
                self.stall(clients)
            case PartitionMode.RESET:
                self.refuse(clients)
                self.reset(clients)

    def heal(self) -> None:
        """End stalls and refusals; held bytes and held connections go through."""
        self._stall = None
        self._refuse = None
        for link in self._links:
            link.flowing.set()

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer_info = writer.get_extra_info("peername")
        peer: Peer = (str(peer_info[0]), int(peer_info[1]))
        self.stats.accepted += 1
        if self._refuse is not None and self._refuse(peer):
            self.stats.refused += 1
            _reset_writer(writer)
            return
        link = _Link(peer=peer, client=writer)
        if self._stall is None or not self._stall(peer):
            link.flowing.set()
        self._links.add(link)
        try:
            # A blackholed connection never reaches the server until the path heals.
            await link.flowing.wait()
            if link.aborted:
                return
            try:
                server_reader, link.server = await asyncio.open_connection(
                    *self._upstream
                )
            except OSError as err:
                logger.info("proxy: upstream %s refused: %s", self._upstream, err)
                self._abort(link)
                return
            link.tasks = [
                asyncio.create_task(self._pump(link, reader, link.server, up=True)),
                asyncio.create_task(
                    self._pump(link, server_reader, link.client, up=False)
                ),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            for end in (link.client, link.server):
                if end is not None and not end.is_closing():
                    end.close()

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        up: bool,
    ) -> None:
        # Reading and writing are separate tasks joined by a queue, so latency delays
        # each chunk without serialising them (a long pipe, not a slow one).
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        loop = asyncio.get_running_loop()

        async def read() -> None:
            while True:
                try:
                    data = await reader.read(CHUNK_BYTES)
                except OSError:
                    data = None  # reset by the peer: pass the reset on
                if data is None:
                    self._abort(link)
                    return
                await queue.put((loop.time() + self.latency, data))
                if not data:
                    return

        async def write() -> None:
            while True:
                due, data = await queue.get()
                await link.flowing.wait()
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
                await link.flowing.wait()
                if data == _EOF:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                await self._send(writer, data, up=up, link=link)

        reading = asyncio.create_task(read())
        try:
            await write()
        except OSError:
            self._abort(link)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _send(
        self, writer: asyncio.StreamWriter, data: bytes, *, up: bool, link: _Link
    ) -> None:
        view = memoryview(data)
        while view:
            size = len(view)
            if self.bandwidth is not None:
                size = max(1, int(self.bandwidth * PACING_SECONDS))
            piece, view = view[:size], view[size:]
            await link.flowing.wait()
            if link.aborted:
                return
            writer.write(piece)
            await writer.drain()
            if up:
                self.stats.bytes_to_server += len(piece)
            else:
                self.stats.bytes_to_client += len(piece)
            if self.bandwidth is not None:
                await asyncio.sleep(len(piece) / self.bandwidth)

    def _abort(self, link: _Link) -> None:
        """Reset both ends of a link: the client and the server each see an RST."""
        if link.aborted:
            return
        link.aborted = True
        self._links.discard(link)
        self.stats.reset += 1
        for end in (link.client, link.server):
            if end is not None:
                _reset_writer(end)
        link.flowing.set()  # let stalled pumps wake up and find the link gone
        for task in link.tasks:
            task.cancel()


def _reset_writer(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer gets an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    writer.transport.abort()
