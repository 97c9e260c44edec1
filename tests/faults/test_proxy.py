"""The fault proxy itself, against an echo server on loopback (about a second)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from tests.faults.proxy import FaultProxy, PartitionMode, Peer


@dataclass
class EchoServer:
    """Echoes every byte back; counts connections and how each one ended."""

    server: asyncio.Server | None = None
    connections: int = 0
    resets: int = 0
    received: int = 0
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except ConnectionResetError:
            self.resets += 1
        finally:
            writer.close()


@pytest_asyncio.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    yield server
    server.server.close()


@pytest_asyncio.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(echo.address) as running:
        yield running


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def connected(proxy: FaultProxy) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        yield reader, writer
    finally:
        writer.close()


def local_port(writer: asyncio.StreamWriter) -> int:
    return int(writer.get_extra_info("sockname")[1])


async def round_trip(connection: Connection, payload: bytes) -> bytes:
    reader, writer = connection
    writer.write(payload)
    await writer.drain()
    return await reader.readexactly(len(payload))


async def eventually(condition: Callable[[], bool], *, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_bytes_go_through_both_ways_and_a_half_close_is_passed_on(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: several chunks, some back pressure
    async with connected(proxy) as (reader, writer):
        writer.write(payload)
        writer.write_eof()
        echoed = await asyncio.wait_for(reader.read(), 10)
    assert echoed == payload
    assert echo.received == len(payload)
    assert proxy.stats.bytes_to_server == proxy.stats.bytes_to_client == len(payload)


async def test_latency_delays_each_way_without_serialising_chunks(
    proxy: FaultProxy,
) -> None:
    proxy.latency = 0.1
    async with connected(proxy) as connection:
        started = time.monotonic()
        assert await round_trip(connection, b"ping") == b"ping"
        one = time.monotonic() - started
        # Ten writes in flight at once still take about one round trip: a long
        # pipe, not a slow one.
        started = time.monotonic()
        reader, writer = connection
        for n in range(10):
            writer.write(b"%02d" % n)
            await writer.drain()
            await asyncio.sleep(0.005)
        assert await reader.readexactly(20) == b"".join(b"%02d" % n for n in range(10))
        ten = time.monotonic() - started
    assert 0.2 <= one < 0.5, one
    assert ten < 0.6, ten


async def test_a_stall_holds_bytes_and_delivers_them_all_after_healing(
    proxy: FaultProxy,
) -> None:
    async with connected(proxy) as connection:
        assert await round_trip(connection, b"before") == b"before"
        proxy.stall()
        reader, writer = connection
        writer.write(b"during")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(6), 0.3)
        assert proxy.open_connections == 1  # nothing failed: the link just hangs
        proxy.heal()
        assert await asyncio.wait_for(reader.readexactly(6), 2) == b"during"


async def test_a_connection_made_during_a_stall_hangs_then_reaches_the_server(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    proxy.stall()
    async with connected(proxy) as (reader, writer):
        writer.write(b"hello")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(5), 0.3)
        assert echo.connections == 0  # blackholed: it never got to the server
        proxy.heal()
        assert await asyncio.wait_for(reader.readexactly(5), 2) == b"hello"
    assert echo.connections == 1


async def test_a_reset_reaches_both_the_client_and_the_server(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    async with connected(proxy) as connection:
        assert await round_trip(connection, b"x") == b"x"
        assert proxy.reset() == 1
        reader, _ = connection
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 2)
    await eventually(lambda: echo.resets == 1)


async def test_refused_clients_are_reset_while_open_connections_keep_working(
    proxy: FaultProxy,
) -> None:
    async with connected(proxy) as established:
        assert await round_trip(established, b"a") == b"a"
        proxy.refuse()
        async with connected(proxy) as (reader, writer):
            writer.write(b"b")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), 2)
        assert await round_trip(established, b"c") == b"c"
        proxy.heal()
        async with connected(proxy) as fresh:
            assert await round_trip(fresh, b"d") == b"d"
    assert proxy.stats.refused == 1


@pytest.mark.parametrize("mode", list(PartitionMode))
async def test_a_partition_cuts_only_the_selected_clients_until_healed(
    proxy: FaultProxy, mode: PartitionMode
) -> None:
    async with connected(proxy) as cut, connected(proxy) as spared:
        cut_port = local_port(cut[1])

        def is_cut(peer: Peer) -> bool:
            return peer[1] == cut_port

        proxy.partition(mode, is_cut)
        assert await round_trip(spared, b"ok") == b"ok"
        cut[1].write(b"lost?")
        with pytest.raises((TimeoutError, ConnectionResetError)):
            await asyncio.wait_for(cut[0].readexactly(5), 0.3)
        proxy.heal()
        if mode is PartitionMode.STALL:
            # The partition healed before TCP gave up: the held bytes arrive.
            assert await asyncio.wait_for(cut[0].readexactly(5), 2) == b"lost?"
    async with connected(proxy) as after:
        assert await round_trip(after, b"healed") == b"healed"


async def test_a_bandwidth_cap_paces_a_transfer(proxy: FaultProxy) -> None:
    proxy.bandwidth = 200_000.0  # bytes per second, each way
    payload = b"z" * 60_000
    async with connected(proxy) as connection:
        started = time.monotonic()
        assert await asyncio.wait_for(round_trip(connection, payload), 5) == payload
        elapsed = time.monotonic() - started
    # 0.3 s each way, the two ways overlapping.
    assert 0.28 <= elapsed < 1.5, elapsed
