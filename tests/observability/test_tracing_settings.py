"""Tracing is off by default and turned on by OpenTelemetry's standard variables (README
"Observability", Traces); what cannot be honoured is refused at start with the variable named."""

from __future__ import annotations

import pytest

from flowplane.errors import ConfigurationError
from flowplane.observability import tracing
from flowplane.settings import load_settings


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"otel_exporter_otlp_endpoint": "http://127.0.0.1:4318"}, True),
        ({"otel_exporter_otlp_traces_endpoint": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"otel_traces_exporter": "otlp"}, True),
        ({"otel_traces_exporter": "none", "otel_exporter_otlp_endpoint": "http://x:1"}, False),
        ({"otel_sdk_disabled": True, "otel_exporter_otlp_endpoint": "http://x:1"}, False),
    ],
)
def test_which_variables_turn_tracing_on(env: dict[str, object], on: bool) -> None:
    settings = load_settings(**env)
    try:
        assert tracing.configure_tracing(settings) is on
        assert tracing.enabled() is on
    finally:
        tracing.shutdown_tracing()
    assert not tracing.enabled()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"otel_traces_exporter": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"otel_traces_exporter": "otlp", "otel_exporter_otlp_protocol": "grpc"}, "grpc"),
        ({"otel_exporter_otlp_endpoint": "http://x:1",
          "otel_exporter_otlp_traces_protocol": "http/json"}, "http/json"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused(env: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        tracing.configure_tracing(load_settings(**env))
    assert named in info.value.message
    assert not tracing.enabled()


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(otel_sdk_disabled="perhaps")
    assert "OTEL_SDK_DISABLED" in info.value.message
    assert "FLOWPLANE_OTEL" not in info.value.message
