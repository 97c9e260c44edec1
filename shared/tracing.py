"""OpenTelemetry tracing across the pipeline, set up from the standard `OTEL_*` variables.

One trace follows an event from the HTTP request that posted it, through its append
to the event store, the relay's publish, to each consumer's apply: the append's span
context is the `traceparent` stored in the event, the relay's publish span is its
child and travels in the Kafka record's `traceparent` header, and each consumer's
apply span is the child of that header.

Off by default: tracing is on only when `OTEL_TRACES_EXPORTER` names an exporter, or
an OTLP endpoint is set without it (`otlp` is then the exporter, the specification's
default), and `OTEL_SDK_DISABLED` is not true. Off, nothing of the SDK is imported
and every traced path tests one `tracer is None`; the services store the caller's
`traceparent` (or a fresh one) exactly as before. Bad values stop the service at
start (`InvalidSettings`), rather than leaving it silently untraced.

The SDK and the OTLP exporter read the rest of their variables themselves
(`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, ...); this
module checks the ones whose mistakes the SDK would only log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.trace import Span, StatusCode, Tracer, TracerProvider, use_span
from opentelemetry.trace.propagation import set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import InvalidSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

TRACEPARENT: Final = "traceparent"
EXPORTERS: Final = frozenset({"otlp", "console", "none"})
PROTOCOLS: Final = ("http/protobuf", "grpc")
# The samplers the SDK knows by name (opentelemetry.sdk.trace.sampling).
SAMPLERS: Final = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
RATIO_SAMPLERS: Final = frozenset({"traceidratio", "parentbased_traceidratio"})
# W3C Trace Context only: the header and the stored extension are `traceparent`,
# whatever OTEL_PROPAGATORS says about HTTP.
_W3C: Final = TraceContextTextMapPropagator()


class TracingSettings(BaseSettings):
    """The `OTEL_*` variables that decide whether and where spans go."""

    # The specification: an empty value is as if the variable were unset.
    model_config = SettingsConfigDict(
        env_prefix="OTEL_", extra="ignore", env_ignore_empty=True
    )

    sdk_disabled: bool = False
    traces_exporter: str = ""
    exporter_otlp_endpoint: str = ""
    exporter_otlp_traces_endpoint: str = ""
    exporter_otlp_protocol: str = ""
    exporter_otlp_traces_protocol: str = ""
    service_name: str = ""
    traces_sampler: str = ""
    traces_sampler_arg: str = ""

    @field_validator("traces_exporter")
    @classmethod
    def _known_exporters(cls, value: str) -> str:
        unknown = set(_names(value)) - EXPORTERS
        if unknown:
            raise ValueError(
                f"unknown exporter {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(EXPORTERS))})"
            )
        return value

    @field_validator("exporter_otlp_endpoint", "exporter_otlp_traces_endpoint")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if value:
            try:
                parts = urlsplit(value)
                absolute = parts.scheme in ("http", "https") and bool(parts.hostname)
            except ValueError:  # e.g. an unclosed IPv6 bracket
                absolute = False
            if not absolute:
                raise ValueError(f"{value!r} is not an absolute http(s) URL")
        return value

    @field_validator("exporter_otlp_protocol", "exporter_otlp_traces_protocol")
    @classmethod
    def _supported_protocol(cls, value: str) -> str:
        if value and value not in PROTOCOLS:
            raise ValueError(
                f"{value!r} is not supported (use {' or '.join(PROTOCOLS)}; the "
                "Python exporter has no http/json)"
            )
        return value

    @field_validator("traces_sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value and value.lower() not in SAMPLERS:
            raise ValueError(
                f"unknown sampler {value!r} (known: {', '.join(sorted(SAMPLERS))})"
            )
        return value

    @field_validator("traces_sampler_arg")
    @classmethod
    def _ratio(cls, value: str) -> str:
        if value:
            try:
                ratio = float(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"{value!r} is not a ratio between 0 and 1")
        return value

    @property
    def exporters(self) -> list[str]:
        """The exporters to send spans to; empty means tracing is off."""
        if self.sdk_disabled:
            return []
        if self.traces_exporter.strip():
            return [name for name in _names(self.traces_exporter) if name != "none"]
        if self.exporter_otlp_endpoint or self.exporter_otlp_traces_endpoint:
            return ["otlp"]
        return []

    @property
    def protocol(self) -> str:
        return (
            self.exporter_otlp_traces_protocol
            or self.exporter_otlp_protocol
            or PROTOCOLS[0]
        )


def _names(value: str) -> list[str]:
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def read_tracing_settings() -> TracingSettings:
    """The `OTEL_*` variables; raises `InvalidSettings` naming a bad one."""
    try:
        return TracingSettings()
    except ValidationError as err:
        problems = "; ".join(
            f"OTEL_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in err.errors()
        )
        raise InvalidSettings(f"Tracing is misconfigured: {problems}.") from None


@dataclass(frozen=True, slots=True)
class Tracing:
    """One service's tracing: its tracer, or None when tracing is off.

    `owned`: the provider was built here from the environment, so the service
    flushes and shuts it down when it stops (a provider handed in is the caller's).
    """

    tracer: Tracer | None = None
    provider: TracerProvider | None = None
    owned: bool = False

    def shutdown(self) -> None:
        """Flush and stop what this service built (nothing when off or handed in)."""
        if self.owned and self.provider is not None:
            self.provider.shutdown()  # type: ignore[attr-defined]  # the SDK's


TRACING_OFF: Final = Tracing()


def service_tracing(service: str, provider: TracerProvider | None = None) -> Tracing:
    """The tracing of `service`: on `provider` when given, else from the environment.

    Raises:
        InvalidSettings: an `OTEL_*` variable is malformed, or names an exporter
            that is not installed.
    """
    scope = f"servicetrail.{service}"
    if provider is not None:
        return Tracing(provider.get_tracer(scope), provider)
    settings = read_tracing_settings()
    exporters = settings.exporters
    if not exporters:
        return TRACING_OFF
    built = _sdk_provider(service, settings, exporters)
    return Tracing(built.get_tracer(scope), built, owned=True)


def _sdk_provider(
    service: str, settings: TracingSettings, exporters: Sequence[str]
) -> TracerProvider:
    # Imported here: a service without tracing never loads the SDK.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Given attributes win over OTEL_SERVICE_NAME in `Resource.create`: name the
    # service only when the operator did not.
    resource = Resource.create(
        {SERVICE_NAME: settings.service_name or f"servicetrail-{service}"}
    )
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG), read by the SDK.
    provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
    return provider


def _exporter(name: str, settings: TracingSettings) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = settings.protocol
    try:
        # Each reads its endpoint, headers, timeout and TLS files from OTEL_*.
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            grpc: SpanExporter = GrpcExporter()  # optional, untyped here
            return grpc
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    except ImportError:
        package = (
            "opentelemetry-exporter-otlp-proto-grpc"
            if protocol == "grpc"
            else "'servicetrail[otlp]'"
        )
        raise InvalidSettings(
            f"OTEL_TRACES_EXPORTER=otlp over {protocol} needs the OTLP exporter: "
            f"pip install {package}."
        ) from None


def parent_context(traceparent: str | None) -> Context | None:
    """The context a W3C `traceparent` names (None: absent or malformed)."""
    if not traceparent:
        return None
    context = _W3C.extract({TRACEPARENT: traceparent})
    return context if context else None


def traceparent_of(span: Span) -> str | None:
    """The W3C `traceparent` naming `span` (None for an invalid span)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def header_traceparent(headers: Iterable[tuple[str, bytes]]) -> str | None:
    """The `traceparent` header of a Kafka record, if it has one."""
    for key, value in headers:
        if key == TRACEPARENT:
            return value.decode("ascii", "replace")
    return None


def in_span(span: Span | None) -> AbstractContextManager[object]:
    """`span` as the current span for the block (nothing when None: untraced)."""
    if span is None:
        return nullcontext()
    return use_span(span, end_on_exit=False)


def end_spans(spans: Iterable[Span], error: BaseException | None = None) -> None:
    """End spans together; with `error`, marked failed by it."""
    for span in spans:
        if error is not None:
            span.record_exception(error)
            span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
        span.end()


def kafka_attributes(
    *, topic: str, partition: int, offset: int | None = None
) -> Mapping[str, str | int]:
    """The messaging semantic conventions of one Kafka record."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
    }
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    return attributes
