"""Tracing is configured by the standard OTEL_* variables: off unless they say where
spans go, and a service refuses to start on a value it cannot honour. Trace contexts
from outside (HTTP and Kafka headers, stored events) are read strictly."""

from __future__ import annotations

from typing import Final

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import get_current_span

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.settings import InvalidSettings
from shared.tracing import (
    TRACING_OFF,
    header_traceparent,
    parent_context,
    read_tracing_settings,
    service_tracing,
)
from tests.fixtures.stack import TEST_JWT_SECRET

OTEL_VARIABLES: Final = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from a service started with no OTEL_* variable."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def sdk_provider(service: str) -> TracerProvider:
    tracing = service_tracing(service)
    assert tracing.tracer is not None
    assert tracing.owned
    assert isinstance(tracing.provider, TracerProvider)
    tracing.shutdown()
    return tracing.provider


class TestOffByDefault:
    def test_no_variable_means_no_tracing(self) -> None:
        assert service_tracing("intake") is TRACING_OFF

    @pytest.mark.parametrize(
        "variables",
        [
            {"OTEL_TRACES_EXPORTER": "none"},
            {"OTEL_TRACES_EXPORTER": " None "},
            {
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            },
            {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
            {
                "OTEL_SDK_DISABLED": "TRUE",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            },
            # Empty is unset (the specification; compose passes unset ones so).
            {
                "OTEL_SDK_DISABLED": "",
                "OTEL_TRACES_EXPORTER": "",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "",
            },
            # Variables that tune an exporter name none.
            {"OTEL_SERVICE_NAME": "intake-eu", "OTEL_TRACES_SAMPLER": "always_on"},
        ],
    )
    def test_variables_that_name_no_exporter_leave_it_off(
        self, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
    ) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        assert service_tracing("intake") is TRACING_OFF

    def test_an_app_built_untraced_has_no_tracer(self) -> None:
        app = create_app(IntakeSettings(jwt_secret=TEST_JWT_SECRET))
        assert app.state.tracing is TRACING_OFF


class TestOn:
    def test_an_otlp_endpoint_alone_turns_the_otlp_exporter_on(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
        assert read_tracing_settings().exporters == ["otlp"]
        sdk_provider("ledger")

    def test_a_traces_endpoint_alone_turns_it_on_too(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector:4318/v1/traces"
        )
        assert read_tracing_settings().exporters == ["otlp"]

    def test_several_exporters_are_each_fed(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp, console")
        assert read_tracing_settings().exporters == ["otlp", "console"]
        sdk_provider("metrics")

    def test_the_service_is_named_after_itself_unless_the_operator_names_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
        assert sdk_provider("dispatch").resource.attributes[SERVICE_NAME] == (
            "servicetrail-dispatch"
        )
        monkeypatch.setenv("OTEL_SERVICE_NAME", "dispatch-eu-1")
        assert sdk_provider("dispatch").resource.attributes[SERVICE_NAME] == (
            "dispatch-eu-1"
        )

    def test_each_service_traces_under_its_own_scope(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
        app = create_app(IntakeSettings(jwt_secret=TEST_JWT_SECRET))
        tracing = app.state.tracing
        assert tracing.tracer is not None
        assert tracing.owned
        span = tracing.tracer.start_span("probe")
        span.end()
        assert isinstance(span, ReadableSpan)
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "servicetrail.intake"
        tracing.shutdown()

    def test_a_provider_handed_in_is_used_and_left_to_its_owner(self) -> None:
        provider = TracerProvider()
        tracing = service_tracing("intake", provider)
        assert tracing.provider is provider
        assert not tracing.owned


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "jaeger", "unknown exporter jaeger"),
        ("OTEL_TRACES_EXPORTER", "otlp,zipkin", "unknown exporter zipkin"),
        ("OTEL_TRACES_EXPORTER", "otlp;console", "unknown exporter otlp;console"),
        ("OTEL_SDK_DISABLED", "maybe", "valid boolean"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "not an absolute http"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector", "not an absolute http"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://", "not an absolute http"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces", "not an absolute http"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "no http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift", "not supported"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "unknown sampler"),
        ("OTEL_TRACES_SAMPLER_ARG", "half", "not a number"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "between 0 and 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "nan", "between 0 and 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "-0.1", "between 0 and 1"),
        # Hostile values are named, not echoed into a crash.
        ("OTEL_TRACES_EXPORTER", "otlp\nconsole", "unknown exporter"),
        ("OTEL_TRACES_EXPORTER", "x" * 10_000, "unknown exporter"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1", "not an absolute http"),
        ("OTEL_TRACES_SAMPLER", "always_on; rm -rf /", "unknown sampler"),
    ],
)
def test_a_bad_value_stops_the_service_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings, match=name) as refused:
        create_app(IntakeSettings(jwt_secret=TEST_JWT_SECRET))
    assert message in str(refused.value)


def test_grpc_without_its_exporter_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the gRPC exporter is installed here")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(
        InvalidSettings, match="pip install opentelemetry-exporter-otlp-proto-grpc"
    ):
        service_tracing("intake")


@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        "",
        "garbage",
        "00-not-a-trace-01",
        f"00-{'0' * 32}-{'1' * 16}-01",  # the all-zero trace id is invalid
        f"00-{'1' * 32}-{'0' * 16}-01",  # and so is the all-zero span id
        f"ff-{'1' * 32}-{'1' * 16}-01",  # version ff is forbidden
        f"00-{'1' * 31}-{'1' * 16}-01",
        "00-" + "é" * 32 + "-" + "1" * 16 + "-01",
        "x" * 100_000,
    ],
)
def test_a_malformed_traceparent_names_no_parent(traceparent: str | None) -> None:
    assert parent_context(traceparent) is None


def test_a_well_formed_traceparent_names_its_span_as_a_remote_parent() -> None:
    context = parent_context(f"00-{'ab' * 16}-{'cd' * 8}-00")
    assert context is not None
    parent = get_current_span(context).get_span_context()
    assert parent.trace_id == int("ab" * 16, 16)
    assert parent.span_id == int("cd" * 8, 16)
    assert parent.is_remote
    assert not parent.trace_flags.sampled


def test_a_record_traceparent_header_is_read_whatever_else_it_carries() -> None:
    headers = [("content-type", b"x"), ("traceparent", b"00-\xff-1"), ("other", b"")]
    assert header_traceparent(headers) == "00-\ufffd-1"
    assert header_traceparent([("content-type", b"x")]) is None
