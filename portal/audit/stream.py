"""The audit stream: every audit event and checkpoint, in chain order, to the configured sinks.

Each sink (AUDIT_STREAM_SINKS) has a durable cursor (AuditStreamCursor): the newest event and
checkpoint it has received. A run ships what lies past the cursor in batches and moves the
cursor only after the sink took a batch, so delivery is at least once and in order: a sink
that fails keeps its cursor and gets the same records again on the next run; nothing is
skipped, and after the cursor nothing is sent twice. The events and checkpoints are never
deleted, so they are the buffer: a sink may be down for days.

Records are the JSON lines of portal/audit/records.py (the format of AUDIT_CHECKPOINT_FILE),
each with its chain hash (events) or MAC (checkpoints) and key id, so whoever receives them
can check them with `python -m portal.audit.verify_export` and the chain key alone.

Sinks, by URL:
- `syslog://host:port`, `syslog+tls://host:port`: one RFC 5424 message per record over TCP,
  octet-counted (RFC 6587), MSGID `audit.event` or `audit.checkpoint`, the record as MSG;
- `file:///path/audit.jsonl`: appended, one record a line;
- `splunk+https://host:8088/services/collector/event`: Splunk HTTP Event Collector events
  (`Authorization: Splunk AUDIT_STREAM_HEC_TOKEN`);
- `https://host/path`: a JSON POST `{"type": "audit.records", "records": [...]}` signed per
  the Standard Webhooks spec with AUDIT_STREAM_SIGNING_SECRET (its id is the body's hash, so a
  batch sent again carries the same id).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone
from rfc5424logging import FRAMING_OCTET_COUNTING, LOG_AUTHPRIV, Rfc5424SysLogHandler
from standardwebhooks import Webhook

from portal.audit import records
from portal.audit.models import AuditCheckpoint, AuditEvent, AuditStreamCursor
from portal.audit.verification import checkpoint_values, event_values

logger = logging.getLogger(__name__)

SCHEMES = {
    "syslog": "syslog",
    "syslog+tls": "syslog",
    "file": "file",
    "splunk+https": "hec",
    "splunk+http": "hec",
    "https": "webhook",
    "http": "webhook",
}
CLEAR_TEXT = {"syslog", "splunk+http", "http"}
LEASE = timedelta(minutes=5)
USER_AGENT = "FleetGraphPortal-AuditStream/1"


class SinkError(Exception):
    """A sink is misconfigured or did not take a batch; the message says which and why."""


@dataclass(frozen=True)
class Sink:
    url: str  # as configured; also the cursor's name (credentials never go in it)
    scheme: str
    parts: SplitResult

    @property
    def kind(self) -> str:
        return SCHEMES[self.scheme]

    @property
    def address(self) -> tuple[str, int]:
        default = {"syslog": 514, "syslog+tls": 6514}.get(self.scheme, 443)
        return self.parts.hostname or "", self.parts.port or default


def parse_sink(url: str) -> Sink:
    """One AUDIT_STREAM_SINKS entry; SinkError says what is wrong with it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise SinkError(f"audit stream sink {url!r} is not a URL ({exc}).") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise SinkError(
            f"audit stream sink {url!r}: unknown scheme {parts.scheme!r} (use syslog://, "
            "syslog+tls://, file://, splunk+https:// or https://)."
        )
    if parts.username or parts.password or parts.query:
        raise SinkError(
            f"audit stream sink {parts.scheme}://{parts.hostname}: no credentials or query in "
            "the URL (AUDIT_STREAM_HEC_TOKEN and AUDIT_STREAM_SIGNING_SECRET hold them)."
        )
    if scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise SinkError(f"audit stream sink {url!r}: write file:///absolute/path.jsonl.")
    elif not parts.hostname:
        raise SinkError(f"audit stream sink {url!r} names no host.")
    return Sink(url, scheme, parts)


def configured_sinks() -> list[Sink]:
    return [parse_sink(url) for url in settings.AUDIT_STREAM_SINKS]


def sink_problems(sink: Sink) -> list[str]:
    """Configuration that the system checks refuse (errors), beyond parsing."""
    problems = []
    if sink.scheme in ("http", "splunk+http") and not settings.DEBUG:
        problems.append(
            f"audit stream sink {sink.url} is not https: audit records and the "
            f"{'HEC token' if sink.kind == 'hec' else 'signature'} would travel in clear text "
            "(allowed with DEBUG only)."
        )
    if sink.kind == "hec" and not settings.AUDIT_STREAM_HEC_TOKEN:
        problems.append(f"audit stream sink {sink.url} needs AUDIT_STREAM_HEC_TOKEN.")
    if sink.kind == "webhook" and not settings.AUDIT_STREAM_SIGNING_SECRET:
        problems.append(f"audit stream sink {sink.url} needs AUDIT_STREAM_SIGNING_SECRET.")
    return problems


def reachability_problem(sink: Sink) -> str:
    """Why the sink cannot be reached right now ("" when it can): a start-up warning only,
    since the cursor keeps everything until it can."""
    if sink.kind == "file":
        folder = Path(sink.parts.path).parent
        if not folder.is_dir():
            return f"audit stream sink {sink.url}: the folder {folder} does not exist."
        return ""
    try:
        with socket.create_connection(sink.address, timeout=2):
            return ""
    except OSError as exc:
        host, port = sink.address
        return f"audit stream sink {sink.url}: {host}:{port} is unreachable ({exc})."


# --------------------------------------------------------------------------- the sinks


def _send_syslog(sink: Sink, batch: list[dict[str, Any]]) -> None:
    try:
        handler = Rfc5424SysLogHandler(
            address=sink.address,
            socktype=socket.SOCK_STREAM,
            framing=FRAMING_OCTET_COUNTING,
            facility=LOG_AUTHPRIV,
            appname="fleet-graph-portal",
            utc_timestamp=True,
            timeout=settings.AUDIT_STREAM_TIMEOUT_SECONDS,
            tls_enable=sink.scheme == "syslog+tls",
            tls_ca_bundle=settings.AUDIT_STREAM_CA_FILE or None,
        )
    except OSError as exc:
        raise SinkError(f"cannot connect to {sink.url}: {exc}") from None
    try:
        for record in batch:
            log_record = logging.LogRecord(
                "portal.audit.stream", logging.INFO, __file__, 0, records.dumps(record), None, None
            )
            log_record.created = _epoch(record)
            log_record.msgid = f"audit.{record['type']}"
            # build_msg and transmit directly: the handler's emit() would swallow a failure.
            handler.transport.transmit(handler.build_msg(log_record))
        _finish(handler.transport.socket)
    except OSError as exc:
        raise SinkError(f"{sink.url} did not take the batch: {exc}") from None
    finally:
        handler.close()


def _finish(connection: socket.socket) -> None:
    """Close our side and read until the listener closes its own: closing with unread bytes
    (TLS session tickets) would reset the connection and the listener could drop what it had
    not read yet. A listener that closes after reading everything also tells us it got it; one
    that keeps the connection open past the timeout is taken as having got it (TCP syslog has
    no acknowledgement)."""
    connection.shutdown(socket.SHUT_WR)
    try:
        while connection.recv(65536):
            pass
    except TimeoutError:
        pass


def _send_file(sink: Sink, batch: list[dict[str, Any]]) -> None:
    try:
        records.append_lines(sink.parts.path, batch)
    except OSError as exc:
        raise SinkError(f"cannot append to {sink.parts.path}: {exc.strerror}") from None


def _post(sink: Sink, body: bytes, headers: dict[str, str]) -> None:
    """The audit stream's one HTTP call."""
    url = sink.parts._replace(scheme=sink.scheme.removeprefix("splunk+")).geturl()
    try:
        response = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=settings.AUDIT_STREAM_TIMEOUT_SECONDS,
            verify=settings.AUDIT_STREAM_CA_FILE or True,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise SinkError(f"{sink.url} did not answer: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise SinkError(f"{sink.url} answered {response.status_code}: {response.text[:200]}")


def _send_hec(sink: Sink, batch: list[dict[str, Any]]) -> None:
    host = socket.gethostname()
    # HEC takes several events in one request as concatenated JSON objects.
    body = "".join(
        json.dumps(
            {
                "time": round(_epoch(record), 6),
                "host": host,
                "source": "fleet-graph-portal",
                "sourcetype": "fleet:audit",
                "event": record,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for record in batch
    ).encode("utf-8")
    _post(sink, body, {"Authorization": f"Splunk {settings.AUDIT_STREAM_HEC_TOKEN}"})


def _send_webhook(sink: Sink, batch: list[dict[str, Any]]) -> None:
    body = json.dumps(
        {"type": "audit.records", "records": batch}, ensure_ascii=False, separators=(",", ":")
    )
    message_id = "audit_" + hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]
    now = timezone.now()
    signature = Webhook(settings.AUDIT_STREAM_SIGNING_SECRET).sign(message_id, now, body)
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    _post(sink, body.encode("utf-8"), headers)


SENDERS: dict[str, Callable[[Sink, list[dict[str, Any]]], None]] = {
    "syslog": _send_syslog,
    "file": _send_file,
    "hec": _send_hec,
    "webhook": _send_webhook,
}


def _epoch(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["created_at"]).timestamp()


# --------------------------------------------------------------------------- shipping


@dataclass(frozen=True)
class Batch:
    records: list[dict[str, Any]]
    last_event_id: int
    last_checkpoint_id: int


def next_batch(cursor: AuditStreamCursor, size: int) -> Batch:
    """The records after the cursor, in chain order: each checkpoint right after the event it
    saw (one that committed after later events were shipped comes next, as it is)."""
    events = list(AuditEvent.objects.filter(pk__gt=cursor.last_event_id).order_by("id")[:size])
    checkpoints = AuditCheckpoint.objects.filter(pk__gt=cursor.last_checkpoint_id).order_by("id")
    if len(events) == size:  # more events may follow: no checkpoint past these yet
        checkpoints = checkpoints.filter(Q(event_id__isnull=True) | Q(event_id__lte=events[-1].pk))
    ordered: list[tuple[tuple[int, int, int], dict[str, Any]]] = [
        ((event.pk, 0, 0), records.event_record(event_values(event))) for event in events
    ]
    ordered += [
        (
            (checkpoint.event_id or 0, 1, checkpoint.pk),
            records.checkpoint_record(checkpoint_values(checkpoint)),
        )
        for checkpoint in checkpoints[:size]
    ]
    ordered.sort(key=lambda item: item[0])
    batch = [record for _, record in ordered]
    return Batch(
        batch,
        max([cursor.last_event_id] + [r["id"] for r in batch if r["type"] == "event"]),
        max([cursor.last_checkpoint_id] + [r["id"] for r in batch if r["type"] == "checkpoint"]),
    )


def _claim(sink: str) -> str | None:
    AuditStreamCursor.objects.get_or_create(sink=sink)
    token, now = secrets.token_hex(16), timezone.now()
    claimed = (
        AuditStreamCursor.objects.filter(sink=sink)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_token=token, lease_until=now + LEASE)
    )
    return token if claimed else None


def ship_sink(sink_url: str, max_batches: int = 20) -> int:
    """Ship what waits for one sink; how many records it took. Safe to run twice at once:
    the second run finds the sink leased and returns 0."""
    sink = next((sink for sink in configured_sinks() if sink.url == sink_url), None)
    if sink is None:
        return 0
    token = _claim(sink.url)
    if token is None:
        return 0
    mine = AuditStreamCursor.objects.filter(sink=sink.url, lease_token=token)
    shipped = 0
    try:
        # The system checks refuse these at start-up; a process started without them (a WSGI
        # server) still sends nothing in clear text or unsigned.
        refused = "; ".join(sink_problems(sink))
        if refused:
            mine.update(last_error=refused[:2000])
            mine.filter(failing_since__isnull=True).update(failing_since=timezone.now())
            return 0
        for _ in range(max_batches):
            cursor = mine.first()
            if cursor is None:  # the lease ran out and another run took over
                break
            batch = next_batch(cursor, settings.AUDIT_STREAM_BATCH_SIZE)
            if not batch.records:
                break
            try:
                SENDERS[sink.kind](sink, batch.records)
            except SinkError as exc:
                logger.warning("Audit stream: %s", exc)
                mine.update(last_error=str(exc)[:2000])
                mine.filter(failing_since__isnull=True).update(failing_since=timezone.now())
                break
            moved = mine.update(
                last_event_id=batch.last_event_id,
                last_checkpoint_id=batch.last_checkpoint_id,
                shipped_total=F("shipped_total") + len(batch.records),
                shipped_at=timezone.now(),
                last_error="",
                failing_since=None,
                lease_until=timezone.now() + LEASE,
            )
            if not moved:
                break
            shipped += len(batch.records)
    finally:
        mine.update(lease_token="", lease_until=None)
    return shipped


def ship_all() -> int:
    """Ship the audit stream to every configured sink."""
    return sum(ship_sink(sink.url) for sink in configured_sinks())
