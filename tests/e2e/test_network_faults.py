"""Network faults on loopback: nothing lost or doubled, lag back under 5 s in 60 s.

`tc netem` does not work on this kernel, so a `FaultProxy` (tests/faults/proxy.py)
sits on the path under test and the services are pointed at it:

- relay <-> broker: a private Tansu broker advertises the proxy, since Kafka clients
  reconnect to the advertised address after bootstrap; the partition hits only the
  intake process's connections (its outbox relay), the ledger's go on flowing.
- ledger and metrics <-> PostgreSQL: both consumers reach the database through the
  proxy; intake and the test reach it directly.
- intake <-> PostgreSQL: latency, then resets and refused connections under load.

Partitions last 30 s and are made both ways a network fails: a stall (packets
blackholed, connections hang: the harder case for TCP clients) and resets. Customer
apps keep posting orders throughout, retrying each with its id until acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from services.stack import Stack
from services.stack.broker import EmbeddedBroker, create_topics
from services.stack.servers import free_port
from shared.db.base import LEDGER_SCHEMA, METRICS_SCHEMA
from shared.domain.actors import Role
from shared.events.topics import DEFAULT_PARTITIONS
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.e2e.network import (
    HEAL_BUDGET_SECONDS,
    LAG_BOUND_SECONDS,
    LagFigures,
    OrderStream,
    assert_nothing_lost_or_doubled,
    connections_of,
    consumer_lag,
    partition_and_heal,
    report,
    wait_until_applied,
)
from tests.e2e.processes import free_port_block, stack_environment, wait_ready
from tests.faults.proxy import FaultProxy, PartitionMode, Selector

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

WARM_UP_SECONDS: Final = 3.0


@dataclass(frozen=True, slots=True)
class Route:
    """Where a service reaches PostgreSQL and the broker: directly or via a proxy."""

    database_url: str
    kafka_bootstrap: str


def stack_for(settings: CommonSettings, home: Path, route: Route) -> Stack:
    return Stack(
        home=home,
        database_url=route.database_url,
        kafka_bootstrap=route.kafka_bootstrap,
        extra_env={
            **stack_environment(settings),
            "ALERT_INTERVAL_SECONDS": "3600",
            # The stream is several customers' worth under one token; rate limits
            # have tests of their own.
            "RATE_LIMIT": "",
        },
    )


def through(proxy: FaultProxy, database_url: str) -> str:
    """`database_url` with its host and port replaced by the proxy's."""
    parts = urlsplit(database_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{proxy.address}" if credentials else proxy.address
    return parts._replace(netloc=netloc).geturl()


def routes(settings: CommonSettings, proxy: FaultProxy) -> tuple[Route, Route]:
    """To PostgreSQL directly, and through the proxy (the broker directly)."""
    return (
        Route(settings.database_url, settings.kafka_bootstrap_servers),
        Route(through(proxy, settings.database_url), settings.kafka_bootstrap_servers),
    )


def database_server(settings: CommonSettings) -> tuple[str, int]:
    server = urlsplit(settings.database_url)
    assert server.hostname is not None
    assert server.port is not None
    return server.hostname, server.port


@dataclass
class Scenario:
    """Running services, the order stream, and the consumers whose lag counts."""

    stacks: list[Stack]
    stream: OrderStream
    schemas: tuple[str, ...]
    dead: list[str] = field(default_factory=list)

    def pid(self, name: str) -> int:
        for stack in self.stacks:
            process = stack.services[name].process if name in stack.services else None
            if process is not None:
                return process.pid
        raise LookupError(name)

    def dead_services(self) -> list[str]:
        return [
            name
            for stack in self.stacks
            for name, service in stack.services.items()
            if service.process is None or service.process.poll() is not None
        ]

    async def lag(self, engine: AsyncEngine) -> float:
        return max([await consumer_lag(engine, s) for s in self.schemas])

    async def settle_and_stop(self, engine: AsyncEngine) -> None:
        """Let the consumers finish, note who died, stop (in a thread: the proxy runs)."""
        await wait_until_applied(engine, self.schemas, timeout=HEAL_BUDGET_SECONDS)
        await asyncio.sleep(1.0)  # anything extra (a double) would show up by now
        self.dead = self.dead_services()
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in self.stacks))

    async def partition_under_load(
        self,
        proxy: FaultProxy,
        mode: PartitionMode,
        engine: AsyncEngine,
        *,
        clients: Selector | None = None,
    ) -> LagFigures:
        """Orders flow; partition, heal, wait for the consumers; stop the services."""

        async def lag() -> float:
            return await self.lag(engine)

        async with asyncio.TaskGroup() as group:
            posting = group.create_task(self.stream.run())
            await asyncio.sleep(WARM_UP_SECONDS)
            figures = await partition_and_heal(proxy, mode, lag, clients=clients)
            self.stream.stop.set()
            await posting
        await self.settle_and_stop(engine)
        return figures

    async def assert_healed(
        self,
        figures: LagFigures,
        engine: AsyncEngine,
        *,
        label: str,
        proxy: FaultProxy,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Report the figures; then: lag back in time, nothing lost or doubled."""
        stream = self.stream
        report(capsys, f"{figures.line(label)}; {stream.summary()}; {proxy.stats}")
        assert not self.dead, f"{self.dead} died instead of healing"
        # The partition really cut the path: the consumers fell behind.
        assert figures.worst_during > LAG_BOUND_SECONDS, figures
        assert figures.recovered_after is not None, figures.line("never recovered")
        assert set(stream.statuses) == {201}, stream.statuses
        await assert_nothing_lost_or_doubled(
            engine, stream.acknowledged, schemas=self.schemas
        )


@dataclass
class Launcher:
    """Starts services on their routes for one test; `stop_all` at its end."""

    settings: CommonSettings
    home: Path
    stacks: list[Stack] = field(default_factory=list)

    async def __call__(
        self, routes: dict[str, Route], *, schemas: tuple[str, ...]
    ) -> Scenario:
        """Start each service on its route (one stack per route); orders go to intake."""
        by_route: dict[Route, Stack] = {}
        base = free_port_block(len(routes))
        for offset, (name, route) in enumerate(routes.items()):
            if route not in by_route:
                by_route[route] = stack_for(self.settings, self.home, route)
                self.stacks.append(by_route[route])
            by_route[route].start_service(name, base + offset)
        for stack in self.stacks:
            for service in stack.services.values():
                await asyncio.to_thread(wait_ready, service.url)
        intake = by_route[routes["intake"]].services["intake"]
        token = issue_token(
            self.settings, role=Role.CUSTOMER, subject="partitioned-customer"
        )
        stream = OrderStream(intake.url, {"Authorization": f"Bearer {token}"})
        return Scenario(self.stacks, stream, schemas)

    async def stop_all(self) -> None:
        # In a thread: the proxy in this loop must keep forwarding while they stop.
        for stack in self.stacks:
            await asyncio.to_thread(stack.stop)


@pytest_asyncio.fixture(loop_scope="session")
async def start(settings: CommonSettings, tmp_path: Path) -> AsyncIterator[Launcher]:
    launcher = Launcher(settings, tmp_path)
    yield launcher
    await launcher.stop_all()


@pytest.mark.parametrize("mode", list(PartitionMode))
async def test_a_relay_broker_partition_loses_nothing_and_lag_recovers(
    mode: PartitionMode,
    settings: CommonSettings,
    engine: AsyncEngine,
    start: Launcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker_port = free_port()
    async with FaultProxy(("127.0.0.1", broker_port)) as proxy:
        broker = EmbeddedBroker(
            port=broker_port,
            advertised_port=proxy.port,
            log_file=start.home / "tansu.log",
        )
        await asyncio.to_thread(broker.start)
        try:
            prefix = settings.kafka_topic_prefix
            await create_topics(
                proxy.address,
                {prefix + name: n for name, n in DEFAULT_PARTITIONS.items()},
            )
            route = Route(settings.database_url, proxy.address)
            scenario = await start(
                {"intake": route, "ledger": route},
                schemas=(LEDGER_SCHEMA,),
            )
            relay = connections_of(scenario.pid("intake"))
            figures = await scenario.partition_under_load(
                proxy, mode, engine, clients=relay
            )
        finally:
            # Its topics live in memory: nothing to stop gracefully for.
            await asyncio.to_thread(broker.kill)
    await scenario.assert_healed(
        figures,
        engine,
        label=f"relay-broker partition ({mode})",
        proxy=proxy,
        capsys=capsys,
    )


@pytest.mark.parametrize("mode", list(PartitionMode))
async def test_a_consumer_database_partition_loses_nothing_and_lag_recovers(
    mode: PartitionMode,
    settings: CommonSettings,
    engine: AsyncEngine,
    start: Launcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with FaultProxy(database_server(settings)) as proxy:
        direct, proxied = routes(settings, proxy)
        scenario = await start(
            {"intake": direct, "ledger": proxied, "metrics": proxied},
            schemas=(LEDGER_SCHEMA, METRICS_SCHEMA),
        )
        figures = await scenario.partition_under_load(proxy, mode, engine)
    await scenario.assert_healed(
        figures,
        engine,
        label=f"consumers-PostgreSQL partition ({mode})",
        proxy=proxy,
        capsys=capsys,
    )


LATENCY_SECONDS: Final = 0.05
RESETS: Final = 8
REFUSED_SECONDS: Final = 2.0


async def test_resets_and_latency_to_the_database_give_intake_clients_503_never_500(
    settings: CommonSettings,
    engine: AsyncEngine,
    start: Launcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with FaultProxy(database_server(settings)) as proxy:
        direct, proxied = routes(settings, proxy)
        scenario = await start(
            {"intake": proxied, "ledger": direct},
            schemas=(LEDGER_SCHEMA,),
        )
        stream = scenario.stream
        async with asyncio.TaskGroup() as group:
            posting = group.create_task(stream.run())
            await asyncio.sleep(WARM_UP_SECONDS)
            proxy.latency = LATENCY_SECONDS
            before = len(stream.acknowledged)
            await asyncio.sleep(5.0)
            slowed = len(stream.acknowledged) - before
            proxy.latency = 0.0
            # Resets land mid-request: a commit may have happened without its
            # answer, and the client's retry with the same id must not store twice.
            reset = 0
            for _ in range(RESETS):
                await asyncio.sleep(0.7)
                reset += proxy.reset()
            proxy.refuse()
            await asyncio.sleep(REFUSED_SECONDS)
            proxy.heal()
            await asyncio.sleep(3.0)
            stream.stop.set()
            await posting
        after_heal = await scenario.lag(engine)
        await scenario.settle_and_stop(engine)

    report(
        capsys,
        f"intake-PostgreSQL latency {LATENCY_SECONDS * 1000:.0f} ms: {slowed / 5:.0f} "
        f"orders/s; {reset} connections reset, {proxy.stats.refused} refused; "
        f"ledger lag 3 s after healing {after_heal:.2f} s; {stream.summary()}",
    )
    assert not scenario.dead, f"{scenario.dead} died instead of healing"
    assert slowed > 0
    assert reset > 0
    # The refused window alone guarantees 503s; never anything but 201 or 503.
    assert stream.statuses[503] > 0, stream.statuses
    assert set(stream.statuses) <= {201, 503}, stream.statuses
    await assert_nothing_lost_or_doubled(
        engine, stream.acknowledged, schemas=scenario.schemas
    )
