"""The load generator: raw HTTP/1.1 keep-alive on uvloop, run as its own process.

`python -m bench.ingest.loadgen CONFIG.json RESULT.json` reads a `LoadConfig`, drives
`POST` requests at one server and writes a `LoadResult`. It is deliberately small:
one request template per connection (only the idempotency key changes), no HTTP
library, so the client costs little CPU next to the server it measures.

Two modes:
- closed: `concurrency` connections each send the next request as soon as the
  previous one is answered; throughput = answers in the measured window / duration.
- open: requests are scheduled at a fixed `rate` whatever the answers do; latency is
  measured from the scheduled time (no coordinated omission), and every acknowledged
  request's event id and wall-clock ack time are returned (for the lag phase).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, Literal

import uvloop

ID_MARKER: Final = "__BENCH_EVENT_ID__"
_HEADER_END: Final = b"\r\n\r\n"
_UUID_LENGTH: Final = 36


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What to send, where, how hard and for how long."""

    host: str
    port: int
    path: str
    body_template: str  # JSON with ID_MARKER where the fresh event id goes
    tokens: list[str]  # bearer tokens, used round-robin per connection
    mode: Literal["closed", "open"]
    concurrency: int
    duration: float
    warmup: float = 0.0
    rate: float = 0.0  # open mode only: requests per second
    request_timeout: float = 10.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadConfig:
        return cls(**json.loads(text))


@dataclass(slots=True)
class LoadResult:
    """What happened in the measured window (warm-up excluded)."""

    mode: str
    measured_seconds: float
    ok: int = 0
    # Status code (as text) or transport failure ("timeout", "io") -> count.
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # successful requests
    # open mode: (event id, wall-clock ack time as epoch seconds) per success.
    acks: list[tuple[str, float]] = field(default_factory=list)
    late_starts: int = 0  # open mode: sent more than 10 ms after their slot
    client_cpu_seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        raw = json.loads(text)
        raw["acks"] = [(str(a), float(b)) for a, b in raw["acks"]]
        return cls(**raw)


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1."""


class Connection:
    """One keep-alive connection sending a fixed request shape."""

    def __init__(self, config: LoadConfig, token: str) -> None:
        self._config = config
        prefix, _, suffix = config.body_template.partition(ID_MARKER)
        self._body_prefix = prefix.encode()
        self._body_suffix = suffix.encode()
        length = len(self._body_prefix) + _UUID_LENGTH + len(self._body_suffix)
        self._head = (
            f"POST {config.path} HTTP/1.1\r\n"
            f"Host: {config.host}:{config.port}\r\n"
            f"Authorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
            "Accept: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode() + self._body_prefix
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self._config.host, self._config.port
            )
        return self._reader, self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def post(self, event_id: str) -> int:
        """Send one request with this event id; return the response status."""
        reader, writer = await self._connect()
        writer.write(self._head + event_id.encode() + self._body_suffix)
        head = await reader.readuntil(_HEADER_END)
        status_line, *header_lines = head[:-4].split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"bad status line {status_line!r}")
        status = int(parts[1])
        length = 0
        chunked = False
        close = False
        for line in header_lines:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                close = value.strip().lower() == b"close"
        if chunked:
            await _read_chunked(reader)
        elif length:
            await reader.readexactly(length)
        if close:
            self.close()
        return status


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        await reader.readexactly(size + 2)


class Recorder:
    """Collects outcomes inside the measured window."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.errors: Counter[str] = Counter()
        self.acks: list[tuple[str, float]] = []
        self.late_starts = 0
        self.last_done = 0.0  # perf_counter of the last measured answer


async def _send(
    connection: Connection, config: LoadConfig, event_id: str
) -> tuple[str | None, int]:
    """(failure kind, status): failure kind is None when an answer came back."""
    try:
        async with asyncio.timeout(config.request_timeout):
            return None, await connection.post(event_id)
    except TimeoutError:
        connection.close()
        return "timeout", 0
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        connection.close()
        return "io", 0
    except HttpError:
        connection.close()
        return "bad_response", 0


def _record(
    recorder: Recorder,
    *,
    failure: str | None,
    status: int,
    latency_s: float,
    event_id: str,
    keep_ack: bool,
) -> None:
    if failure is not None:
        recorder.errors[failure] += 1
    elif 200 <= status < 300:
        recorder.latencies_ms.append(latency_s * 1000.0)
        if keep_ack:
            recorder.acks.append((event_id, time.time()))
    else:
        recorder.errors[str(status)] += 1


async def run_closed(config: LoadConfig) -> tuple[Recorder, float]:
    """`concurrency` connections back to back; the window follows the warm-up."""
    recorder = Recorder()
    started = time.perf_counter()
    window_start = started + config.warmup
    window_end = window_start + config.duration

    async def worker(index: int) -> None:
        connection = Connection(config, config.tokens[index % len(config.tokens)])
        try:
            while (sent := time.perf_counter()) < window_end:
                event_id = str(uuid.uuid4())
                failure, status = await _send(connection, config, event_id)
                done = time.perf_counter()
                if sent >= window_start and done <= window_end:
                    _record(
                        recorder,
                        failure=failure,
                        status=status,
                        latency_s=done - sent,
                        event_id=event_id,
                        keep_ack=False,
                    )
                if failure is not None:
                    await asyncio.sleep(0.05)  # do not spin on a refused port
        finally:
            connection.close()

    await asyncio.gather(*(worker(i) for i in range(config.concurrency)))
    return recorder, config.duration


async def run_open(config: LoadConfig) -> tuple[Recorder, float]:
    """A fixed schedule at `rate`; a free connection from a pool serves each slot."""
    recorder = Recorder()
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for index in range(config.concurrency):
        pool.put_nowait(Connection(config, config.tokens[index % len(config.tokens)]))
    interval = 1.0 / config.rate
    total = round((config.warmup + config.duration) * config.rate)
    warmup_count = round(config.warmup * config.rate)
    in_flight: set[asyncio.Task[None]] = set()

    async def one(slot: float, measured: bool) -> None:
        connection = await pool.get()
        try:
            if time.perf_counter() - slot > 0.010 and measured:
                recorder.late_starts += 1
            event_id = str(uuid.uuid4())
            failure, status = await _send(connection, config, event_id)
            if measured:
                recorder.last_done = time.perf_counter()
                _record(
                    recorder,
                    failure=failure,
                    status=status,
                    latency_s=time.perf_counter() - slot,
                    event_id=event_id,
                    keep_ack=True,
                )
        finally:
            pool.put_nowait(connection)

    origin = time.perf_counter()
    for index in range(total):
        slot = origin + index * interval
        delay = slot - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(slot, measured=index >= warmup_count))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=config.request_timeout * 2)
    if in_flight:
        recorder.errors["unfinished"] += len(in_flight)
    for task in list(in_flight):
        task.cancel()
    while not pool.empty():
        pool.get_nowait().close()
    # A server that falls behind answers after the schedule ended: the achieved rate
    # is the answers over the time until the last one, not over the schedule.
    window_start = origin + config.warmup
    return recorder, max(config.duration, recorder.last_done - window_start)


async def run(config: LoadConfig) -> LoadResult:
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    if config.mode == "closed":
        recorder, seconds = await run_closed(config)
    else:
        recorder, seconds = await run_open(config)
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    return LoadResult(
        mode=config.mode,
        measured_seconds=seconds,
        ok=len(recorder.latencies_ms),
        errors=dict(recorder.errors),
        latencies_ms=recorder.latencies_ms,
        acks=recorder.acks,
        late_starts=recorder.late_starts,
        client_cpu_seconds=cpu,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.ingest.loadgen CONFIG.json RESULT.json")
        return 2
    config = LoadConfig.from_json(Path(argv[0]).read_text())
    with contextlib.suppress(KeyboardInterrupt):
        result = uvloop.run(run(config))
        Path(argv[1]).write_text(result.to_json())
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
