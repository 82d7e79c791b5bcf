"""One trace per change: a Graph notification is followed from the webhook request through
the drain's claim, the sync job and its Graph calls, the event emission, the fan-out and the
delivery to the Fleet endpoint, which receives the trace's `traceparent`; an API send is
followed into its job and Graph calls. Spans go to the SDK's in-memory exporter; the jobs
run in this process as a worker would, the emulator answers over HTTPS."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.urls import reverse
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from integrations.microsoft import sync
from integrations.microsoft.models import MonitoredUser, NotificationInbox
from portal.access import service_clients
from portal.access.actors import Actor
from portal.events.endpoints import create_endpoint
from portal.jobs.models import Job
from portal.lib import tracing
from tests.conftest import run_queued_jobs
from tests.integrations.microsoft.webhook_support import make_sub, notification, post_json
from tests.portal.events.receiver import running_receiver

pytestmark = pytest.mark.django_db(transaction=True)
SYSTEM = Actor.system("tests")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.start(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.stop()


def one(found: list[ReadableSpan], name: str) -> ReadableSpan:
    matching = [s for s in found if s.name == name]
    assert len(matching) == 1, (name, [s.name for s in found])
    return matching[0]


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return (
        span.parent is not None
        and span.parent.span_id == parent.context.span_id
        and span.context.trace_id == parent.context.trace_id
    )


def traceparent_of(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def test_a_notification_is_one_trace_from_the_webhook_to_the_fleet_endpoint(
    client, settings, graph_settings, monitored, emulator, emulator_user, drain, spans
):
    settings.DEBUG = True  # http to 127.0.0.1 is the test receiver's, allowed explicitly
    settings.EVENT_ENDPOINT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    sync.run(sync.ensure_state(monitored.pk, "messages").pk)  # the baseline: no events
    make_sub(monitored, graph_id="sub-traced", client_state="traced-state")
    with running_receiver() as receiver:
        _, receiver.secret = create_endpoint(SYSTEM, receiver.url, [], "fleet")
        mail = emulator.control.create_mail(emulator_user["userPrincipalName"], subject="Gate 7")
        spans.clear()
        answer = post_json(
            client,
            "/api/webhooks/mail",
            {"value": [notification("sub-traced", "traced-state", message_id=mail["id"])]},
        )
        assert answer.status_code == 202
        drain()
    assert [e["data"]["graphId"] for e in receiver.events()] == [mail["id"]]

    found = list(spans.get_finished_spans())
    webhook = next(s for s in found if s.kind == SpanKind.SERVER)
    assert webhook.attributes["http.url"].endswith("/api/webhooks/mail")
    claim = one(found, "graph.inbox.claim")
    sync_job = one(found, "job graph.sync_delta")
    emit = one(found, "events.emit")
    fan_out = one(found, "job events.fan_out")
    delivery_job = one(found, "job events.deliver")
    post = one(found, "events.deliver POST")
    assert child_of(claim, webhook) and claim.attributes["notifications"] == 1
    assert child_of(sync_job, claim)
    graph_calls = [s for s in found if s.kind == SpanKind.CLIENT and child_of(s, sync_job)]
    assert any("/messages/delta" in s.attributes["http.url"] for s in graph_calls)
    assert child_of(emit, sync_job)
    assert child_of(fan_out, emit)
    assert child_of(delivery_job, fan_out)
    assert child_of(post, delivery_job) and post.kind == SpanKind.CLIENT
    # The Fleet side received the delivery span's context: it continues this one trace.
    assert [d["traceparent"] for d in receiver.received] == [traceparent_of(post)]
    # The context was carried by the rows, as it is across processes.
    trace_id = f"{webhook.context.trace_id:032x}"
    row = NotificationInbox.objects.get(subscription_graph_id="sub-traced")
    assert tracing.trace_id(row.trace_context) == trace_id
    assert tracing.trace_id(Job.objects.get(pk=row.sync_job_id).trace_context) == trace_id
    assert {tracing.trace_id(j.trace_context) for j in Job.objects.filter(created_by="events")} == {
        trace_id
    }


def test_an_api_send_is_one_trace_into_its_job_and_graph_calls(
    client, graph_settings, emulator, people, vera_viewer, spans
):
    sender, to = people
    MonitoredUser.objects.create(identifier=sender)
    token = service_clients.create_client(SYSTEM, "fleet-api", ["messages:send"])[1]
    answer = client.post(
        "/api/messages",
        data=json.dumps(
            {"channel": "mail", "from": sender, "to": [to], "subject": "Depot 2", "body": "Closed"}
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_IDEMPOTENCY_KEY="traced-1",
    )
    assert answer.status_code == 202, answer.content
    assert run_queued_jobs() == ["succeeded"]
    found = list(spans.get_finished_spans())
    request = next(s for s in found if s.kind == SpanKind.SERVER)
    assert request.attributes["http.url"].endswith("/api/messages")
    send_job = one(found, "job graph.send_mail")
    assert child_of(send_job, request)
    graph_calls = [s for s in found if s.kind == SpanKind.CLIENT and child_of(s, send_job)]
    assert any(s.attributes["http.url"].endswith("/send") for s in graph_calls)
    # The console's message and job pages show the trace id, to look the trace up by.
    trace_id = f"{request.context.trace_id:032x}"
    job = Job.objects.get(job_type="graph.send_mail")
    client.force_login(vera_viewer)
    for page in (
        reverse("console:message", args=[answer.json()["id"]]),
        reverse("console:job_detail", args=[job.pk]),
    ):
        assert f"<code>{trace_id}</code>" in client.get(page).content.decode()


class _OtlpCollector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.path, self.headers.get("Content-Type", ""), len(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_spans_are_exported_over_otlp_only_when_the_endpoint_is_set(settings):
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = ""
    assert tracing.configure() is False
    assert not tracing.enabled() and not DjangoInstrumentor().is_instrumented_by_opentelemetry
    with tracing.span("not recorded"):
        assert tracing.current_traceparent() == ""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpCollector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _OtlpCollector.received = []
    try:
        settings.OTEL_EXPORTER_OTLP_ENDPOINT = f"http://127.0.0.1:{server.server_address[1]}/"
        assert tracing.configure() is True
        with tracing.span("exported"):
            assert tracing.trace_id(tracing.current_traceparent())
        tracing.stop()  # flushes the batch
    finally:
        tracing.stop()
        server.shutdown()
        server.server_close()
    [(path, content_type, size)] = _OtlpCollector.received
    assert path == "/v1/traces" and content_type == "application/x-protobuf" and size > 0
