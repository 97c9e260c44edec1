"""Spans leave a service only over what OTEL_* name: to an OTLP/HTTP collector when
an endpoint is set, and nowhere, with the SDK never imported, when tracing is off.

The collector is a small HTTP server of the test's own that decodes what it is sent
with the OTLP protobuf definitions.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from shared.domain.actors import Role
from shared.settings import CommonSettings
from shared.tracing import TRACING_OFF
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body

pytestmark = pytest.mark.integration

ROOT: Final = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


class Collector(ThreadingHTTPServer):
    """Receives OTLP/HTTP exports: (service.name, trace id hex, span name) each."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Export)
        self.requests: list[tuple[str, str]] = []  # path, content type
        self.spans: list[tuple[str, str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Export(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, self.headers["Content-Type"]))
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.server.spans.append((service, span.trace_id.hex(), span.name))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads what arrived."""


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_an_otlp_endpoint_sends_each_service_spans_to_the_collector(
    settings: CommonSettings,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    trace_id = secrets.token_hex(16)
    customer = bearer(settings)(Role.CUSTOMER, "alice")
    async with (
        running(create_intake(service_settings(settings, IntakeSettings))) as intake,
        running(create_ledger(service_settings(settings, LedgerSettings))),
    ):
        created = await intake.post(
            "/v1/orders",
            json=new_order_body(),
            headers={**customer, "traceparent": f"00-{trace_id}-{'1' * 16}-01"},
        )
        assert created.status_code == 201, created.text
        async with asyncio.timeout(30):
            while ("servicetrail-ledger", trace_id) not in {
                (service, trace) for service, trace, _ in collector.spans
            }:
                await asyncio.sleep(0.05)
    topic = settings.kafka_topic_prefix + "servicetrail.order-events"
    assert {path for path, _ in collector.requests} == {"/v1/traces"}
    assert {kind for _, kind in collector.requests} == {"application/x-protobuf"}
    assert {
        (service, name) for service, trace, name in collector.spans if trace == trace_id
    } == {
        ("servicetrail-intake", "POST /v1/orders"),
        ("servicetrail-intake", "event_store.append"),
        ("servicetrail-intake", f"send {topic}"),
        ("servicetrail-ledger", f"process {topic}"),
    }


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param({}, id="no OTEL variable"),
        pytest.param(
            {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp,console"},
            id="OTEL_SDK_DISABLED=true",
        ),
    ],
)
def test_untraced_services_import_no_sdk_and_export_nothing(
    settings: CommonSettings, collector: Collector, variables: dict[str, str]
) -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("OTEL_")
    }
    environment |= variables | {
        # Where spans would go if anything were exported.
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
    }
    if not variables:
        del environment["OTEL_EXPORTER_OTLP_ENDPOINT"]  # an endpoint turns it on
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.untraced_run",
            settings.model_dump_json(),
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    outcome = json.loads(finished.stdout.splitlines()[-1])
    assert outcome["status"] == 201
    assert outcome["sdk_modules"] == []
    assert outcome["tracing"] == [repr(TRACING_OFF)] * 2
    # Untraced, the event keeps the app's own trace context, as before tracing.
    assert outcome["stored"] == outcome["sent"]
    assert collector.requests == []
