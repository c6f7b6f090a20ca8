"""Traces with the OpenTelemetry SDK: a REST write -> the config actor -> the snapshot build ->
each push to a data plane, as one trace.

Off by default. `configure_tracing(settings)` turns it on when an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or
`OTEL_TRACES_EXPORTER=otlp` is set, and `OTEL_SDK_DISABLED` is not true; the exporter is OTLP over
HTTP/protobuf (the SDK reads the other standard variables: headers, timeout, sampler, resource).
While off, every helper here returns at its first test of `_tracer`: nothing is allocated and no
context is attached, so tracing off costs one attribute read per call.

Context propagation does not rely on contextvars crossing task boundaries: trio copies the context
into a task when it starts, so a command sent through the config actor's mailbox would otherwise
be handled in the actor's own (unrelated) context. Instead an `Origin` is captured where work is
handed over (a `Txn` when it is made, a `ConfigChange` when it is announced, a snapshot when it is
published) and the receiving side resumes it (`resumed`), explicitly.

The provider is this module's own, not the global one (`trace.set_tracer_provider` may be called
once per process): tests and the server configure and shut it down as often as they need.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from flowplane.errors import ConfigurationError
from flowplane.observability import context as log_context
from flowplane.settings import Settings

__all__ = [
    "Origin",
    "capture",
    "configure_tracing",
    "current_ids",
    "enabled",
    "resumed",
    "server_span",
    "shutdown_tracing",
    "span_from",
]

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def wanted(settings: Settings) -> bool:
    """Whether the settings ask for traces (see the module docstring)."""
    if settings.otel_sdk_disabled:
        return False
    exporter = (settings.otel_traces_exporter or "").strip().lower()
    if exporter == "none":
        return False
    if exporter not in ("", "otlp"):
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={settings.otel_traces_exporter!r} is not supported: use otlp"
            " (or none)"
        )
    endpoint = settings.otel_exporter_otlp_traces_endpoint or settings.otel_exporter_otlp_endpoint
    return exporter == "otlp" or bool(endpoint)


def configure_tracing(settings: Settings, exporter: SpanExporter | None = None) -> bool:
    """Start exporting spans if `settings` ask for it (True then). `exporter` replaces the OTLP
    exporter (a benchmark's, say); the OTLP exporter reads its endpoint from the settings."""
    global _provider, _tracer
    shutdown_tracing()
    if not wanted(settings):
        return False
    protocol = (
        settings.otel_exporter_otlp_traces_protocol
        or settings.otel_exporter_otlp_protocol
        or "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise ConfigurationError(
            f"OTLP protocol {protocol!r} is not supported: Flowplane exports traces over"
            " http/protobuf (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)"
        )
    if exporter is None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as err:
            # xds-protos ships older copies of the OTLP .proto modules into the same package
            # directory; installed after opentelemetry-proto, they replace its files.
            raise ConfigurationError(
                "tracing cannot start: the OTLP protocol files are not those of "
                "opentelemetry-proto (xds-protos installed older copies over them); run "
                "`pip install --no-deps --force-reinstall opentelemetry-proto==1.45.2` "
                f"({err})"
            ) from None

        endpoint = settings.otel_exporter_otlp_traces_endpoint
        if endpoint is None and settings.otel_exporter_otlp_endpoint:
            # the spec: the signal path is appended to the generic endpoint, not to the specific
            endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint)
    # service.name defaults to flowplane; OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win.
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "flowplane"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, _tracer = provider, provider.get_tracer("flowplane")
    return True


def shutdown_tracing() -> None:
    """Flush pending spans and stop exporting (tracing is off afterwards)."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def force_flush(timeout_millis: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_millis)


# -- handing work over -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a piece of work came from: when (monotonic seconds; None for work no write caused,
    e.g. the first snapshot), its span context (None while tracing is off) and its log fields
    (request id, caller)."""

    at: float | None
    context: otel_context.Context | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    wall_ns: int = 0


NO_ORIGIN = Origin(None)


def capture() -> Origin:
    """The current task's origin, to hand over with a command or a change."""
    if _tracer is None:
        return Origin(time.monotonic(), None, log_context.current())
    now = time.monotonic()
    return Origin(now, otel_context.get_current(), log_context.current(), time.time_ns())


@contextmanager
def resumed(
    origins: Origin | Sequence[Origin],
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    from_origin: bool = False,
) -> Iterator[Origin]:
    """Continue work handed over with `origins`: their log fields are bound and, while tracing,
    a span `name` runs as the child of the first origin (linked to the others) and is current.
    `from_origin` starts the span when the first origin was captured (e.g. a command's span then
    covers its time in the mailbox). Yields the origin to hand further on: the earliest `at` of
    `origins` and this span's context."""
    many = [origins] if isinstance(origins, Origin) else list(origins)
    first = many[0] if many else NO_ORIGIN
    times = [o.at for o in many if o.at is not None]
    at = min(times) if times else None
    with log_context.bound(first.fields):
        if _tracer is None:
            yield Origin(at, None, first.fields)
            return
        links = [
            Link(trace.get_current_span(o.context).get_span_context())
            for o in many[1:]
            if o.context is not None
        ]
        start = first.wall_ns if from_origin and first.wall_ns else None
        span = _tracer.start_span(
            name, context=first.context, attributes=attributes, links=links, start_time=start
        )
        with trace.use_span(span, end_on_exit=True):
            yield Origin(at, otel_context.get_current(), first.fields, time.time_ns())


def span_from(origin: Origin, name: str, attributes: Mapping[str, Any]) -> trace.Span | None:
    """A span that is a child of `origin`, starting when the origin was captured (the caller
    ends it), or None while tracing is off or the origin carries no span."""
    if _tracer is None or origin.context is None:
        return None
    return _tracer.start_span(
        name, context=origin.context, attributes=attributes, start_time=origin.wall_ns or None
    )


@contextmanager
def server_span(headers: Sequence[tuple[bytes, bytes]], method: str) -> Iterator[trace.Span | None]:
    """A SERVER span for one REST request, continuing the caller's `traceparent` if any, current
    for the request. Yields None while tracing is off."""
    if _tracer is None:
        yield None
        return
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
    parent = propagate.extract(carrier)
    span = _tracer.start_span(method, context=parent, kind=SpanKind.SERVER)
    with trace.use_span(span, end_on_exit=True, record_exception=False):
        yield span


def set_error(span: trace.Span, description: str) -> None:
    span.set_status(Status(StatusCode.ERROR, description))


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, or None (tracing off, or no span)."""
    if _tracer is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
