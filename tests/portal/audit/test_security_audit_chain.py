"""The audit chain detects rewriting, truncation and deletion of the newest rows.

Found: the hash was unkeyed SHA-256, so on SQLite an edited row plus recomputed hashes
verified as intact; on PostgreSQL `TRUNCATE` left "intact: 0 events", and the table's owner
could disable the row trigger.
"""

from __future__ import annotations

import hashlib
from importlib import import_module
from io import StringIO

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from portal.access.actors import Actor
from portal.alerts import services
from portal.alerts.models import Alert
from portal.audit.chain import HASHED_FIELDS, canonical
from portal.audit.db_roles import grant_app_role
from portal.audit.models import AuditCheckpoint, AuditEvent
from portal.audit.services import record
from portal.checks import check_audit_chain_key
from portal.jobs.runner import enqueue
from portal.lib.env import env_secret

SYSTEM = Actor.system("tests")
on_postgresql = pytest.mark.skipif("connection.vendor != 'postgresql'")


def verify() -> str:
    out = StringIO()
    call_command("verify_audit_chain", stdout=out)
    return out.getvalue()


def as_intruder(*statements) -> None:
    """SQL straight at the table, as its owner with the row trigger disabled (PostgreSQL)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        for sql, params in statements:
            cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")


def rechain_unkeyed(from_id: int) -> None:
    """Recompute every hash from `from_id` on with the published formula (no key needed)."""
    events = list(AuditEvent.objects.order_by("id"))
    prev = next((e.hash for e in reversed(events) if e.id < from_id), "0" * 64)
    statements = []
    for event in (e for e in events if e.id >= from_id):
        values = {name: getattr(event, name) for name in HASHED_FIELDS}
        digest = hashlib.sha256((prev + canonical(values)).encode()).hexdigest()
        statements.append(
            (
                "UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
                [prev, digest, event.id],
            )
        )
        prev = digest
    as_intruder(*statements)


def alert_state():
    return Alert.objects.filter(rule="audit_chain_broken").values_list("state", flat=True).first()


# --- the reproduction, as found -------------------------------------------------------------


@pytest.mark.django_db
def test_reproduction_an_edited_row_with_recomputed_hashes_is_caught():
    events = [record(f"demo.{i}", actor=SYSTEM) for i in range(4)]
    as_intruder(
        ("UPDATE audit_auditevent SET actor_name = %s WHERE id = %s", ["mallory", events[1].pk])
    )
    rechain_unkeyed(events[1].pk)
    with pytest.raises(CommandError, match=f"BROKEN at event #{events[1].pk}"):
        verify()


@pytest.mark.django_db
@on_postgresql
def test_reproduction_truncate_is_refused_and_a_truncated_log_is_caught():
    for i in range(3):
        record(f"demo.{i}", actor=SYSTEM)
    verify()  # checkpoint: 3 events
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.count() == 3
    # The owner can still drop its own trigger first: the checkpoint catches the truncation.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        cursor.execute("TRUNCATE audit_auditevent")
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    with pytest.raises(CommandError, match="0 events, fewer than the 3"):
        verify()


@pytest.mark.django_db
def test_reproduction_deleting_the_newest_rows_is_caught():
    events = [record(f"demo.{i}", actor=SYSTEM) for i in range(5)]
    verify()
    as_intruder(("DELETE FROM audit_auditevent WHERE id >= %s", [events[3].pk]))
    with pytest.raises(CommandError, match="3 events, fewer than the 5"):
        verify()


# --- the key --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rows_name_their_key_and_a_rotated_key_still_verifies_old_rows(settings):
    old = settings.AUDIT_CHAIN_KEY
    first = record("demo.before", actor=SYSTEM)
    settings.AUDIT_CHAIN_KEY = "next:" + "n" * 40 + "," + old
    second = record("demo.after", actor=SYSTEM)
    assert (first.key_id, second.key_id) == ("test", "next")
    assert "2 events verified" in verify()
    settings.AUDIT_CHAIN_KEY = "next:" + "n" * 40  # the old key dropped too early
    with pytest.raises(CommandError, match=f"#{first.pk}.*key 'test'"):
        verify()


@pytest.mark.django_db
def test_a_checkpoint_cannot_be_forged_without_the_key():
    for i in range(3):
        record(f"demo.{i}", actor=SYSTEM)
    verify()
    checkpoint = AuditCheckpoint.objects.get()
    AuditCheckpoint.objects.create(
        created_at=checkpoint.created_at,
        event_id=None,
        event_hash="0" * 64,
        event_count=0,
        key_id="test",
        mac="f" * 64,
    )
    with pytest.raises(CommandError, match="not signed"):
        verify()


def test_the_key_is_required_outside_debug(settings):
    settings.AUDIT_CHAIN_KEY = ""
    assert [error.id for error in check_audit_chain_key()] == ["portal.E030"]
    settings.AUDIT_CHAIN_KEY = "short:abc"
    assert [error.id for error in check_audit_chain_key()] == ["portal.E031"]
    assert "abc" not in check_audit_chain_key()[0].msg
    settings.AUDIT_CHAIN_KEY = "a:" + "x" * 32 + ",b:" + "y" * 32
    assert check_audit_chain_key() == []


def test_the_key_can_come_from_a_file(tmp_path, monkeypatch):
    path = tmp_path / "audit-key"
    path.write_text("file:" + "z" * 40 + "\n")
    monkeypatch.delenv("AUDIT_CHAIN_KEY", raising=False)
    monkeypatch.setenv("AUDIT_CHAIN_KEY_FILE", str(path))
    assert env_secret("AUDIT_CHAIN_KEY") == "file:" + "z" * 40


@pytest.mark.django_db
def test_without_a_key_nothing_is_written(settings):
    settings.AUDIT_CHAIN_KEY = ""
    with pytest.raises(ImproperlyConfigured, match="AUDIT_CHAIN_KEY"):
        record("demo.unkeyed", actor=SYSTEM)
    assert not AuditEvent.objects.exists()


# --- legacy rows (written before the chain was keyed) ---------------------------------------


def legacy_rows(count: int) -> list[AuditEvent]:
    """Rows as the old code wrote them, inserted as the keying migration found them."""

    prev, rows = "0" * 64, []
    for n in range(count):
        values = {
            "created_at": timezone.now(),
            "actor_type": "system",
            "actor_id": "",
            "actor_name": "old",
            "actor_role": "system",
            "action": f"legacy.{n}",
            "target_type": "",
            "target_id": "",
            "params": {},
            "outcome": "success",
            "reason": "",
            "ip": "",
            "user_agent": "",
            "request_id": "",
        }
        digest = hashlib.sha256((prev + canonical(values)).encode()).hexdigest()
        rows.append(
            AuditEvent.objects.create(prev_hash=prev, hash=digest, key_id="sha256-legacy", **values)
        )
        prev = digest
    return rows


def pin_like_the_migration() -> None:
    import_module("portal.audit.migrations.0003_keyed_chain_checkpoints").pin_legacy_chain(
        apps, None
    )


@pytest.mark.django_db
def test_legacy_rows_keep_verifying_and_keyed_rows_follow_them():
    legacy_rows(3)
    pin_like_the_migration()
    record("demo.keyed", actor=SYSTEM)
    assert "4 events verified" in verify()


@pytest.mark.django_db
def test_legacy_rows_cannot_be_appended_or_take_over_keyed_rows():
    rows = legacy_rows(2)
    pin_like_the_migration()
    keyed = record("demo.keyed", actor=SYSTEM)
    # Rewrite the keyed row as a legacy one (the formula is public).
    as_intruder(
        ("UPDATE audit_auditevent SET key_id = %s WHERE id = %s", ["sha256-legacy", keyed.pk])
    )
    rechain_unkeyed(keyed.pk)
    with pytest.raises(CommandError, match=f"#{keyed.pk}.*legacy"):
        verify()
    assert rows


@pytest.mark.django_db
def test_rewriting_the_whole_legacy_chain_misses_the_pinned_checkpoint():
    rows = legacy_rows(3)
    pin_like_the_migration()
    as_intruder(
        ("UPDATE audit_auditevent SET actor_name = %s WHERE id = %s", ["mallory", rows[0].pk])
    )
    rechain_unkeyed(rows[0].pk)
    with pytest.raises(CommandError, match=f"#{rows[-1].pk}.*checkpoint"):
        verify()


# --- alerts ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_failed_verification_raises_the_alert_wherever_it_ran():
    events = [record(f"demo.{i}", actor=SYSTEM) for i in range(3)]
    assert services.check_audit_chain().ok  # the hourly schedule
    as_intruder(("DELETE FROM audit_auditevent WHERE id = %s", [events[-1].pk]))
    with pytest.raises(CommandError):
        verify()  # the command
    assert alert_state() == "firing"
    check = services.check_audit_chain()
    assert not check.ok and "fewer than the 3" in check.problem


@pytest.mark.django_db
def test_every_passing_verification_records_a_checkpoint():
    verify()
    record("demo.one", actor=SYSTEM)
    verify()
    latest = AuditCheckpoint.objects.order_by("-id").values_list(
        "event_count", "event_id", "source"
    )[0]
    assert AuditCheckpoint.objects.count() == 2
    assert latest == (1, AuditEvent.objects.get().pk, "verify_audit_chain")


# --- PostgreSQL: the app's role ---------------------------------------------------------------


@pytest.mark.django_db
@on_postgresql
def test_the_app_role_cannot_disable_the_trigger_truncate_update_or_delete():
    event = record("demo.before", actor=SYSTEM)
    role = "fleet_app_test_role"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")  # rolled back with the test
    grant_app_role(role)

    def as_app(sql, params=None):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {role}")
            cursor.execute(sql, params)

    for sql in (
        "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
        "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only",
        "TRUNCATE audit_auditevent",
        "TRUNCATE audit_auditcheckpoint",
        "DROP TRIGGER audit_event_no_truncate ON audit_auditevent",
    ):
        with pytest.raises(DatabaseError, match=r"must be owner|permission denied"):
            as_app(sql)
    for sql in (
        "UPDATE audit_auditevent SET actor_name = 'mallory'",
        "DELETE FROM audit_auditevent",
        "UPDATE audit_auditcheckpoint SET event_count = 0",
    ):
        with pytest.raises(DatabaseError, match="permission denied"):
            as_app(sql)
    # …while it can do its job: append to the log, verify it, use the other tables.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {role}")
        record("demo.as_app", actor=SYSTEM)
        assert "2 events verified" in verify()

        enqueue("jobs.noop")
    assert AuditEvent.objects.get(pk=event.pk).actor_name == "tests"
