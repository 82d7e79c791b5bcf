"""One trace per change: OpenTelemetry spans, and their context carried with queued work.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then `configure()` (called by every process
at start-up, from PortalConfig.ready) installs a tracer provider that exports over OTLP/HTTP
and the Django, requests and psycopg instrumentations. When it is off nothing is installed,
and every helper here returns at its first line (an empty string, a null context), so the
hot paths pay one flag test.

Work crosses processes through rows, not calls: the receiver writes an inbox row, a drain
claims it in another process, a worker runs the job it caused. Each such row keeps the W3C
`traceparent` of the span that made it (NotificationInbox.trace_context,
Job.trace_context), and whoever takes the row up continues that trace (`continued()`). The
event delivery's POST carries a `traceparent` header, so the Fleet side continues it too.
docs/tracing.md lists the spans.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanProcessor
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def configure() -> bool:
    """Trace to the OTLP endpoint when OTEL_EXPORTER_OTLP_ENDPOINT is set; else do nothing.
    Returns whether tracing is on."""
    endpoint = settings.OTEL_EXPORTER_OTLP_ENDPOINT
    if not endpoint or enabled():
        return enabled()
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    start(BatchSpanProcessor(exporter))
    return True


def start(processor: SpanProcessor) -> TracerProvider:
    """Install a provider with this span processor and the instrumentations (tests give an
    in-memory exporter's processor)."""
    global _provider, _tracer
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.OTEL_SERVICE_NAME}))
    provider.add_span_processor(processor)
    DjangoInstrumentor().instrument(tracer_provider=provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    # No SQL comments: statements stay the same text, so the drivers' caches keep serving them.
    PsycopgInstrumentor().instrument(tracer_provider=provider, enable_commenter=False)
    _provider, _tracer = provider, provider.get_tracer("portal")
    return provider


def stop() -> None:
    """Remove the instrumentations and flush what is left (tests; a clean shutdown)."""
    global _provider, _tracer
    if _provider is None:
        return
    for instrumentor in (DjangoInstrumentor(), RequestsInstrumentor(), PsycopgInstrumentor()):
        instrumentor.uninstrument()
    _provider.shutdown()
    _provider = _tracer = None


def current_traceparent() -> str:
    """The W3C traceparent of the current span, to store with work queued now ("" when
    tracing is off or no span is current)."""
    if _tracer is None:
        return ""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def trace_id(traceparent: str) -> str:
    """The trace id inside a stored traceparent (what the console shows), or ""."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def _context(traceparent: str) -> Context | None:
    return _propagator.extract({"traceparent": traceparent}) if traceparent else None


def _link(traceparent: str) -> Link | None:
    span_context = trace.get_current_span(_context(traceparent)).get_span_context()
    return Link(span_context) if span_context.is_valid else None


@contextlib.contextmanager
def continued(
    traceparent: str,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    links: list[str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """A span continuing the trace of `traceparent` (a new trace when it is empty), linked
    to the others in `links` (work coalesced from several traces)."""
    if _tracer is None:
        yield
        return
    linked = [link for link in map(_link, links or []) if link is not None]
    with _tracer.start_as_current_span(
        name, context=_context(traceparent), kind=kind, links=linked, attributes=attributes
    ):
        yield


@contextlib.contextmanager
def span(
    name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """A child of the current span."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, kind=kind, attributes=attributes):
        yield
