"""The audit chain cannot be rewritten by deleting its checkpoints.

Found: with write access to the database, recomputing every row as `sha256-legacy` or
deleting the newest rows, then deleting the checkpoints, left a log that `verify_audit_chain`
called intact (and signed a new checkpoint over). On PostgreSQL a superuser, or the tables'
owner allowed to SET session_replication_role, skips the append-only triggers with
`SET session_replication_role = replica`. Each tampering is reproduced here as found, on
whichever database the suite runs on.
"""

from __future__ import annotations

import hashlib
import json
from importlib import import_module

import pytest
from django.apps import apps
from django.core.management import CommandError
from django.db import connection, transaction
from django.test import override_settings

from portal.access.actors import Actor
from portal.audit import records
from portal.audit.chain import HASHED_FIELDS, canonical, keyring
from portal.audit.db_roles import grant_app_role, role_problems
from portal.audit.models import AuditCheckpoint, AuditEvent
from portal.audit.services import record
from portal.checks import check_audit_database, check_audit_database_role
from tests.portal.audit.conftest import as_intruder

SYSTEM = Actor.system("tests")
on_postgresql = pytest.mark.skipif("connection.vendor != 'postgresql'")


@pytest.fixture
def checkpoint_file(tmp_path, settings):
    path = tmp_path / "checkpoints.jsonl"
    settings.AUDIT_CHECKPOINT_FILE = str(path)
    return path


def delete_checkpoints(where: str = "1 = 1", params: list | None = None):
    return (f"DELETE FROM audit_auditcheckpoint WHERE {where}", params or [])


def rewrite_all_as_legacy():
    """Every row rehashed with the published unkeyed formula, as `sha256-legacy`."""
    prev, statements = "0" * 64, []
    for event in AuditEvent.objects.order_by("id"):
        values = {name: getattr(event, name) for name in HASHED_FIELDS}
        digest = hashlib.sha256((prev + canonical(values)).encode()).hexdigest()
        statements.append(
            (
                "UPDATE audit_auditevent SET key_id = %s, prev_hash = %s, hash = %s WHERE id = %s",
                ["sha256-legacy", prev, digest, event.id],
            )
        )
        prev = digest
    return statements


def events(count: int) -> list[AuditEvent]:
    return [record(f"demo.{n}", actor=SYSTEM) for n in range(count)]


# --- the reproductions, as found --------------------------------------------------------------


@pytest.mark.django_db
def test_reproduction_rows_rewritten_as_legacy_after_deleting_the_checkpoints(verify):
    events(4)
    verify()
    as_intruder(delete_checkpoints(), *rewrite_all_as_legacy())
    assert not AuditCheckpoint.objects.exists()
    with pytest.raises(CommandError, match="no signed checkpoint pins the legacy chain"):
        verify()
    assert not AuditCheckpoint.objects.exists()  # nothing signed over the forgery


@pytest.mark.django_db
def test_reproduction_newest_rows_and_all_checkpoints_deleted(verify, checkpoint_file):
    rows = events(5)
    verify()
    record("demo.after", actor=SYSTEM)
    verify()
    as_intruder(("DELETE FROM audit_auditevent WHERE id >= %s", [rows[3].pk]), delete_checkpoints())
    first = json.loads(checkpoint_file.read_text().splitlines()[0])
    # What is left agrees with itself; the copy outside does not.
    with pytest.raises(
        CommandError,
        match=rf"checkpoint #{first['id']} \(checkpoints.jsonl line 1\) is missing from the "
        "database: checkpoints were deleted",
    ):
        verify()
    assert not AuditCheckpoint.objects.exists()


@pytest.mark.django_db
def test_against_names_the_file_even_when_it_is_not_the_configured_one(
    verify, checkpoint_file, settings
):
    rows = events(3)
    verify()
    settings.AUDIT_CHECKPOINT_FILE = ""
    as_intruder(("DELETE FROM audit_auditevent WHERE id = %s", [rows[-1].pk]), delete_checkpoints())
    assert "intact" in verify()  # without the copy outside, nothing can tell
    with pytest.raises(CommandError, match=r"line 1.*missing from the database"):
        verify("--against", str(checkpoint_file))


@pytest.mark.django_db
def test_the_newest_checkpoint_deleted_is_caught_against_the_file(verify, checkpoint_file):
    events(2)
    verify()
    verify()
    newest = AuditCheckpoint.objects.order_by("-id").first()
    as_intruder(delete_checkpoints("id = %s", [newest.pk]))
    with pytest.raises(CommandError, match=rf"checkpoint #{newest.pk} .*line 2.*deleted"):
        verify()


# --- the checkpoint chain -----------------------------------------------------------------------


@pytest.mark.django_db
def test_each_checkpoint_signs_the_one_before(verify):
    events(1)
    verify()
    record("demo.more", actor=SYSTEM)
    verify()
    first, second = AuditCheckpoint.objects.order_by("id")
    assert (first.version, first.seq, first.prev_checkpoint_id, first.prev_mac) == (2, 1, None, "")
    assert (second.seq, second.prev_checkpoint_id, second.prev_mac) == (2, first.pk, first.mac)


@pytest.mark.django_db
def test_a_checkpoint_deleted_from_the_middle_breaks_the_next(verify):
    events(2)
    for _ in range(3):
        verify()
    _, middle, last = AuditCheckpoint.objects.order_by("id")
    as_intruder(delete_checkpoints("id = %s", [middle.pk]))
    with pytest.raises(CommandError, match=rf"checkpoint #{last.pk} does not follow .*deleted"):
        verify()


@pytest.mark.django_db
def test_the_oldest_checkpoints_deleted_is_a_shorter_sequence(verify):
    events(2)
    verify()
    verify()
    as_intruder(delete_checkpoints("id = %s", [AuditCheckpoint.objects.order_by("id")[0].pk]))
    with pytest.raises(CommandError, match="number 2 of the checkpoint chain but none comes"):
        verify()


@pytest.mark.django_db
def test_a_checkpoint_rewritten_in_place_is_caught(verify, checkpoint_file):
    events(2)
    verify()
    as_intruder(("UPDATE audit_auditcheckpoint SET event_count = 1", []))
    with pytest.raises(CommandError, match="not signed by a listed key"):
        verify()


# --- legacy rows --------------------------------------------------------------------------------


def legacy_rows(count: int) -> None:
    prev = "0" * 64
    for n in range(count):
        event = AuditEvent(
            created_at="2024-01-01T00:00:00+00:00",
            actor_type="system",
            actor_name="old",
            actor_role="system",
            action=f"legacy.{n}",
            outcome="success",
            params={},
        )
        event.save()  # (no hash yet: rows are rewritten below, as the old code wrote them)
        event.refresh_from_db()
        values = {name: getattr(event, name) for name in HASHED_FIELDS}
        digest = hashlib.sha256((prev + canonical(values)).encode()).hexdigest()
        as_intruder(
            (
                "UPDATE audit_auditevent SET key_id = %s, prev_hash = %s, hash = %s WHERE id = %s",
                ["sha256-legacy", prev, digest, event.pk],
            )
        )
        prev = digest


@pytest.mark.django_db
def test_legacy_rows_without_a_checkpoint_fail_closed(verify):
    legacy_rows(2)
    with pytest.raises(CommandError, match="no signed checkpoint pins the legacy chain"):
        verify()


@pytest.mark.django_db
def test_the_migration_pin_starts_the_checkpoint_chain(verify):
    legacy_rows(2)
    import_module("portal.audit.migrations.0003_keyed_chain_checkpoints").pin_legacy_chain(
        apps, None
    )
    pin = AuditCheckpoint.objects.get()
    assert pin.version == 1
    record("demo.keyed", actor=SYSTEM)
    assert "3 events verified" in verify()
    assert "3 events verified" in verify()
    chained = AuditCheckpoint.objects.order_by("id")[1]
    assert (chained.seq, chained.prev_mac) == (1, pin.mac)
    # Legacy rows past the pinned boundary are refused even with the chain intact.
    as_intruder(*rewrite_all_as_legacy(), delete_checkpoints("id > %s", [pin.pk]))
    with pytest.raises(CommandError, match="legacy unkeyed hash after the chain was keyed"):
        verify()


# --- the copy outside ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_checkpoint_is_appended_to_the_file_and_verifies_offline(verify, checkpoint_file):
    events(2)
    verify()
    record("demo.more", actor=SYSTEM)
    verify()
    lines = checkpoint_file.read_text().splitlines()
    assert [json.loads(line)["event_count"] for line in lines] == [2, 3]
    check = records.verify_export(lines, keyring())
    assert check.ok and check.checkpoints == 2, check.message


@pytest.mark.django_db
def test_an_edited_file_is_reported_as_such(verify, checkpoint_file):
    events(1)
    verify()
    line = json.loads(checkpoint_file.read_text())
    line["event_count"] = 0
    checkpoint_file.write_text(json.dumps(line) + "\n")
    with pytest.raises(CommandError, match=r"does not verify by itself: line 1: .*forged"):
        verify()


@pytest.mark.django_db
def test_against_a_missing_file_is_a_clear_error(verify, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        verify("--against", str(tmp_path / "nothing.jsonl"))


# --- PostgreSQL: who can skip the triggers ------------------------------------------------------


@pytest.mark.django_db
@on_postgresql
def test_reproduction_the_replica_bypass_by_an_app_role_that_owns_the_tables(
    verify, checkpoint_file
):
    rows = events(4)
    verify()
    owner = "fleet_owner_app_test_role"
    with connection.cursor() as cursor:  # all rolled back with the test
        cursor.execute(f"CREATE ROLE {owner} NOLOGIN")
        for table in ("audit_auditevent", "audit_auditcheckpoint"):
            cursor.execute(f"ALTER TABLE {table} OWNER TO {owner}")
        cursor.execute(f"GRANT SET ON PARAMETER session_replication_role TO {owner}")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {owner}")
        assert len(role_problems()) == 2  # owns the tables, may SET the parameter
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("DELETE FROM audit_auditevent WHERE id >= %s", [rows[2].pk])
        cursor.execute("DELETE FROM audit_auditcheckpoint")
        cursor.execute("SET LOCAL session_replication_role = origin")
        cursor.execute("RESET ROLE")  # SET LOCAL outlives the savepoint
    assert AuditEvent.objects.count() == 2 and not AuditCheckpoint.objects.exists()
    with pytest.raises(CommandError, match=r"line 1.*missing from the database"):
        verify()


@pytest.mark.django_db
@on_postgresql
def test_the_database_role_check_names_a_superuser_and_passes_the_app_role():
    assert role_problems() == ["the database role 'postgres' is a superuser"]
    assert [w.id for w in check_audit_database_role(databases=["default"])] == ["portal.W034"]
    role = "fleet_app_check_test_role"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")
    grant_app_role(role)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {role}")
        assert check_audit_database_role(databases=["default"]) == []
        cursor.execute("RESET ROLE")


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_check_deploy_warns_about_sqlite_and_a_missing_app_role():
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    postgresql = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    with override_settings(DATABASES={"default": sqlite}):
        assert [w.id for w in check_audit_database()] == ["portal.W032"]
    with override_settings(DATABASES={"default": postgresql}, DATABASE_APP_ROLE=""):
        assert [w.id for w in check_audit_database()] == ["portal.W033"]
    with override_settings(DATABASES={"default": postgresql}, DATABASE_APP_ROLE="fleet_app"):
        assert check_audit_database() == []
