"""The audit stream ships every event and checkpoint, in order and at least once, to real local
receivers; a receiver that is down for a while loses nothing; the export catches tampering."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.core.management import CommandError
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook

from portal.access.actors import Actor
from portal.alerts.rules import RULES
from portal.audit import records
from portal.audit.chain import compute_hash, signing_key
from portal.audit.models import AuditCheckpoint, AuditEvent, AuditStreamCursor
from portal.audit.services import record
from portal.audit.stream import _claim, ship_sink
from portal.audit.tasks import ship_audit_stream
from portal.audit.verification import event_values
from portal.checks import check_audit_stream
from portal.runtime import registry
from tests.conftest import free_port
from tests.portal.audit.conftest import HttpReceiver, SyslogListener, as_intruder

SYSTEM = Actor.system("tests")
SECRET = "whsec_" + base64.b64encode(b"audit-stream-test-signing-secret").decode()

pytestmark = pytest.mark.django_db


def events(count: int, prefix: str = "demo") -> list[AuditEvent]:
    return [record(f"{prefix}.{n}", actor=SYSTEM) for n in range(count)]


def chain_order() -> list[tuple[str, int]]:
    """What the database holds, in the order the stream must deliver it."""
    keyed = [((e.pk, 0, 0), ("event", e.pk)) for e in AuditEvent.objects.all()]
    keyed += [
        ((c.event_id or 0, 1, c.pk), ("checkpoint", c.pk)) for c in AuditCheckpoint.objects.all()
    ]
    return [item for _, item in sorted(keyed)]


def shipped(records_: list[dict]) -> list[tuple[str, int]]:
    return [(r["type"], r["id"]) for r in records_]


def webhook_records(receiver: HttpReceiver) -> list[dict]:
    found = []
    for message in receiver.messages:
        Webhook(SECRET).verify(message["body"], message["headers"])  # raises when forged
        found += json.loads(message["body"])["records"]
    return found


# --- syslog ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_syslog_gets_each_record_as_an_rfc5424_message_in_chain_order(
    tls, settings, receivers, server_tls, verify
):
    listener = receivers(SyslogListener(server_tls if tls else None))
    settings.AUDIT_STREAM_SINKS = [f"syslog{'+tls' if tls else ''}://127.0.0.1:{listener.port}"]
    events(3)
    verify()
    events(2, "later")
    assert ship_audit_stream() == 6
    listener.expected = 6
    assert shipped(listener.records) == chain_order()
    first = listener.messages[0]
    assert first["pri"] == 10 * 8 + 6  # authpriv.info
    assert (first["msgid"], first["app"]) == ("audit.event", "fleet-graph-portal")
    assert listener.messages[3]["msgid"] == "audit.checkpoint"
    event = AuditEvent.objects.order_by("id").first()
    assert (first["record"]["hash"], first["record"]["key_id"]) == (event.hash, "test")
    assert ship_audit_stream() == 0  # nothing twice after the cursor
    assert len(listener.messages) == 6


@pytest.mark.parametrize("kind", ["syslog", "webhook", "splunk"])
def test_a_receiver_down_for_a_while_loses_nothing_and_keeps_the_order(
    kind, settings, receivers, server_tls, verify
):
    if kind == "syslog":
        receiver = receivers(SyslogListener())
        url = f"syslog://127.0.0.1:{receiver.port}"
    else:
        receiver = receivers(HttpReceiver(server_tls))
        url = f"{'splunk+' if kind == 'splunk' else ''}https://127.0.0.1:{receiver.port}/in"
    settings.AUDIT_STREAM_SINKS = [url]
    settings.AUDIT_STREAM_SIGNING_SECRET = SECRET
    settings.AUDIT_STREAM_HEC_TOKEN = "hec-token-for-tests"
    settings.AUDIT_STREAM_BATCH_SIZE = 4
    events(3)
    assert ship_audit_stream() == 3
    receiver.stop()  # down for a while: the portal goes on auditing
    events(5, "while-down")
    verify()
    assert ship_audit_stream() == 0
    cursor = AuditStreamCursor.objects.get(sink=url)
    assert cursor.last_error and cursor.failing_since is not None
    (lag,) = AuditStreamCursor.objects.lags([url])
    assert lag.pending == 6 and lag.lag_seconds > 0
    events(2, "still-down")
    receiver.start()  # back, on the same port
    assert ship_audit_stream() == 8
    if kind == "syslog":
        receiver.expected = 11
        received = receiver.records
    elif kind == "webhook":
        received = webhook_records(receiver)
    else:
        assert {m["headers"]["Authorization"] for m in receiver.messages} == {
            "Splunk hec-token-for-tests"
        }
        received = [
            json.loads(line)["event"]
            for message in receiver.messages
            for line in message["body"].decode().replace("}{", "}\n{").splitlines()
        ]
    assert shipped(received) == chain_order()  # nothing lost, in order, none twice
    cursor.refresh_from_db()
    assert (cursor.last_error, cursor.failing_since, cursor.shipped_total) == ("", None, 11)
    assert AuditStreamCursor.objects.lags([url])[0].pending == 0


def test_an_http_receiver_that_refuses_keeps_the_cursor(settings, receivers, server_tls):
    receiver = receivers(HttpReceiver(server_tls))
    url = f"https://127.0.0.1:{receiver.port}/in"
    settings.AUDIT_STREAM_SINKS = [url]
    settings.AUDIT_STREAM_SIGNING_SECRET = SECRET
    events(2)
    receiver.status = 503
    assert ship_audit_stream() == 0
    assert "answered 503" in AuditStreamCursor.objects.get(sink=url).last_error
    receiver.status = 200
    assert ship_audit_stream() == 2
    assert shipped(webhook_records(receiver)) == chain_order()


def test_a_sink_the_checks_refuse_gets_nothing_even_without_the_checks(settings, receivers):
    receiver = receivers(HttpReceiver())
    url = f"http://127.0.0.1:{receiver.port}/in"
    settings.AUDIT_STREAM_SINKS = [url]
    settings.AUDIT_STREAM_SIGNING_SECRET = SECRET
    settings.DEBUG = False
    events(2)
    assert ship_audit_stream() == 0 and receiver.messages == []
    assert "not https" in AuditStreamCursor.objects.get(sink=url).last_error
    settings.DEBUG = True  # a development portal may use a plain local receiver
    assert ship_audit_stream() == 2
    assert shipped(webhook_records(receiver)) == chain_order()


def test_a_second_run_at_the_same_time_skips_the_sink(settings, tmp_path):
    url = f"file://{tmp_path}/audit.jsonl"
    settings.AUDIT_STREAM_SINKS = [url]
    events(2)
    assert _claim(url) is not None  # another worker is shipping to it
    assert ship_sink(url) == 0
    AuditStreamCursor.objects.update(lease_until=None)
    assert ship_sink(url) == 2


# --- the file sink, the offline verifier and tampering ------------------------------------


def verify_offline(path, *, key: str | None = None) -> subprocess.CompletedProcess:
    """The standalone verifier without site-packages (-S): the standard library only."""
    return subprocess.run(
        [sys.executable, "-S", "-m", "portal.audit.verify_export", str(path)],
        cwd=django_settings.BASE_DIR,
        env={"AUDIT_CHAIN_KEY": key or django_settings.AUDIT_CHAIN_KEY, "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def stream_file(tmp_path, settings):
    path = tmp_path / "audit-stream.jsonl"
    settings.AUDIT_STREAM_SINKS = [f"file://{path}"]
    return path


def test_the_file_export_verifies_offline_with_the_key_alone(stream_file, verify):
    events(3)
    verify()
    events(2, "later")
    verify()
    ship_audit_stream()
    result = verify_offline(stream_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Export intact: 5 events and 2 checkpoints verified." in result.stdout
    wrong = verify_offline(stream_file, key="other:" + "x" * 40)
    assert wrong.returncode == 1 and "line 1: event" in wrong.stdout


def test_the_offline_verifier_needs_the_key(stream_file, tmp_path):
    events(1)
    ship_audit_stream()
    result = verify_offline(stream_file, key=" ")
    assert result.returncode == 2 and "Give the chain key" in result.stderr
    assert verify_offline(tmp_path / "none.jsonl").returncode == 2


def test_the_offline_verifier_names_an_edited_line(stream_file):
    events(3)
    ship_audit_stream()
    lines = stream_file.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["actor_name"] = "mallory"
    lines[1] = json.dumps(edited)
    stream_file.write_text("\n".join(lines) + "\n")
    result = verify_offline(stream_file)
    assert result.returncode == 1
    assert f"line 2: event #{edited['id']}'s content does not match its hash" in result.stdout


def test_a_record_shipped_twice_is_recognised_as_a_repeat(stream_file):
    events(2)
    ship_audit_stream()
    AuditStreamCursor.objects.update(last_event_id=0)  # a crash after sending, before the cursor
    ship_audit_stream()
    check = records.verify_export(stream_file.read_text().splitlines(), {"test": signing_key()})
    assert check.ok and (check.events, check.duplicates) == (2, 2), check.message


def test_tamper_deleted_rows_and_checkpoints_are_caught_against_the_stream(stream_file, verify):
    rows = events(5)
    verify()
    ship_audit_stream()
    as_intruder(
        ("DELETE FROM audit_auditevent WHERE id >= %s", [rows[3].pk]),
        ("DELETE FROM audit_auditcheckpoint", []),
    )
    assert "intact" in verify()  # the database agrees with itself (no checkpoint file here)
    with pytest.raises(CommandError, match=rf"#{rows[3].pk}: it was shipped \(audit-stream"):
        verify("--against", str(stream_file))


def test_tamper_by_a_key_holder_who_rewrote_rows_and_checkpoints_is_caught(stream_file, verify):
    """Even with the chain key (so the database verifies by itself after the rewrite), rows
    edited after they were shipped differ from the export."""
    rows = events(4)
    verify()
    ship_audit_stream()
    key, prev, statements = signing_key(), rows[0].prev_hash, []
    for event in AuditEvent.objects.order_by("id"):
        values = event_values(event)
        if event.pk == rows[1].pk:
            values["actor_name"] = "someone else"
        digest = compute_hash(prev, values, key)
        statements.append(
            (
                "UPDATE audit_auditevent SET actor_name = %s, prev_hash = %s, hash = %s "
                "WHERE id = %s",
                [values["actor_name"], prev, digest, event.pk],
            )
        )
        prev = digest
    as_intruder(*statements, ("DELETE FROM audit_auditcheckpoint", []))
    assert "intact" in verify()
    with pytest.raises(CommandError, match=rf"#{rows[1].pk}: it differs from what was shipped"):
        verify("--against", str(stream_file))


def test_rows_added_by_a_key_holder_in_place_of_shipped_ones_are_caught(stream_file, verify):
    rows = events(3)
    ship_audit_stream()
    as_intruder(("DELETE FROM audit_auditevent WHERE id = %s", [rows[-1].pk]))
    replacement = record("demo.replacement", actor=SYSTEM)  # chains on after rows[1]
    assert "intact" in verify()
    with pytest.raises(CommandError, match=rf"#{rows[-1].pk}: it was shipped .* deleted"):
        verify("--against", str(stream_file))
    assert replacement.prev_hash == rows[1].hash


# --- configuration, figures and the alert ---------------------------------------------------


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_bad_sinks_are_refused_with_a_reason(settings, tmp_path):
    settings.DEBUG = False
    settings.AUDIT_STREAM_SIGNING_SECRET = SECRET
    settings.AUDIT_STREAM_HEC_TOKEN = ""
    cases = {
        "ftp://siem.example/audit": "portal.E035",
        "https://user:pw@siem.example/in": "portal.E035",
        "file://relative/path.jsonl": "portal.E035",
        "http://127.0.0.1:9/in": "portal.E036",
        "splunk+https://127.0.0.1:9/services/collector/event": "portal.E036",
    }
    for url, expected in cases.items():
        settings.AUDIT_STREAM_SINKS = [url]
        found = check_audit_stream()
        assert ids(found) == [expected], (url, [m.msg for m in found])
    settings.AUDIT_STREAM_SINKS = ["http://127.0.0.1:9/in"]
    assert "not https" in check_audit_stream()[0].msg
    settings.DEBUG = True
    assert ids(check_audit_stream()) == ["portal.W035"]  # allowed with DEBUG; down right now


def test_an_unreachable_sink_at_start_up_is_a_warning(settings, tmp_path, receivers):
    listener = receivers(SyslogListener())
    settings.AUDIT_STREAM_SINKS = [
        f"syslog://127.0.0.1:{free_port()}",
        f"file://{tmp_path}/missing-folder/audit.jsonl",
        f"syslog://127.0.0.1:{listener.port}",
        f"file://{tmp_path}/audit.jsonl",
    ]
    found = check_audit_stream()
    assert ids(found) == ["portal.W035", "portal.W035"]
    assert "unreachable" in found[0].msg and "does not exist" in found[1].msg
    assert "Nothing is lost" in found[0].hint


def test_the_lag_is_on_metrics_and_the_dashboard_and_behind_an_alert(settings, client, vera_viewer):
    url = f"syslog://127.0.0.1:{free_port()}"  # nothing listens: the sink is down
    settings.AUDIT_STREAM_SINKS = [url]
    settings.API_TRUSTED_NETWORKS = ["127.0.0.0/8"]
    events(3)
    ship_audit_stream()
    text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert f'fleet_audit_stream_pending{{sink="{url}"}} 3.0' in text
    assert f'fleet_audit_stream_lag_seconds{{sink="{url}"}}' in text
    client.force_login(vera_viewer)  # (a sign-in is one more audit event to ship)
    response = client.get(reverse("console:dashboard"))
    tile = {item["name"]: item for item in response.context["health"]}["Audit stream"]
    assert tile["state"] == "bad" and "4 records to ship" in tile["text"]
    assert "Connection refused" in response.content.decode()
    rule = next(rule for rule in RULES if rule.name == "audit_stream_lagging")
    assert not rule.evaluate().firing  # behind, but not for long yet
    registry.set_value(SYSTEM, "ALERT_AUDIT_STREAM_LAG_MINUTES", 1)
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        verdict = rule.evaluate()
    assert verdict.firing and "5 records wait" in verdict.message  # (the setting is audited)
    assert "Connection refused" in verdict.message
