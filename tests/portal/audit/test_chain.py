import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from portal.access.actors import Actor
from portal.audit.chain import GENESIS_HASH, compute_hash, find_first_break, signing_key
from portal.audit.models import AuditEvent
from portal.audit.services import record
from portal.lib.redaction import MASK

SYSTEM = Actor.system("tests")


def verify() -> str:
    out = StringIO()
    call_command("verify_audit_chain", stdout=out)
    return out.getvalue()


def raw_update(sql: str, params: list) -> None:
    """Change a row behind the application's back (as an intruder with SQL access would)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


@pytest.mark.django_db
class TestRecord:
    def test_nul_characters_from_callers_are_stored_and_verify(self):
        # Found on PostgreSQL: a sign-in callback with error=%00 made the refusal's audit a 500.
        event = record(
            "demo.nul", actor=SYSTEM, target_id="a\x00b", params={"k\x00": ["v\x00"]}, reason="\x00"
        )
        event.refresh_from_db()
        assert event.target_id == "a\ufffdb"
        assert event.params == {"k\ufffd": ["v\ufffd"]}
        assert event.reason == "\ufffd"
        assert "intact" in verify()

    def test_it_chains_each_event_to_the_one_before(self):
        first = record("demo.first", actor=SYSTEM, target_type="thing", target_id=1)
        second = record("demo.second", actor=SYSTEM, params={"n": 2})
        assert first.prev_hash == GENESIS_HASH
        assert second.prev_hash == first.hash
        values = {
            f: getattr(second, f)
            for f in (
                "created_at",
                "actor_type",
                "actor_id",
                "actor_name",
                "actor_role",
                "action",
                "target_type",
                "target_id",
                "params",
                "outcome",
                "reason",
                "ip",
                "user_agent",
                "request_id",
            )
        }
        assert second.key_id == signing_key().id
        assert second.hash == compute_hash(first.hash, values, signing_key())
        assert "2 events verified" in verify()

    def test_stored_rows_hash_the_same_after_a_round_trip_through_the_database(self):
        record(
            "demo.types",
            actor=SYSTEM,
            params={"when": object(), "items": (1, 2), "nested": {"ok": True, "none": None}},
        )
        checked, problem = find_first_break(AuditEvent.objects.order_by("id"))
        assert (checked, problem) == (1, None)

    def test_it_masks_secrets_in_params_and_reason(self):
        event = record(
            "demo.secret",
            actor=SYSTEM,
            params={
                "client_secret": "hunter2",
                "nested": {"Password": "x", "refresh_token": "y"},
                "list": [{"apiKey": "z"}],
                "note": "used fgp_abcdefghijklmnop here",
            },
            reason="token fgp_abcdefghijklmnop failed",
        )
        stored = AuditEvent.objects.get(pk=event.pk)
        assert stored.params["client_secret"] == MASK
        assert stored.params["nested"] == {"Password": MASK, "refresh_token": MASK}
        assert stored.params["list"] == [{"apiKey": MASK}]
        assert "fgp_abcdefghijklmnop" not in stored.params["note"]
        assert "fgp_abcdefghijklmnop" not in stored.reason

    def test_it_runs_in_the_callers_transaction(self):
        with pytest.raises(RuntimeError), transaction.atomic():
            record("demo.rolled_back", actor=SYSTEM)
            raise RuntimeError("the action failed")
        assert not AuditEvent.objects.filter(action="demo.rolled_back").exists()


@pytest.mark.django_db
class TestTamperDetection:
    def test_an_edited_row_is_named(self):
        events = [record(f"demo.{i}", actor=SYSTEM) for i in range(5)]
        raw_update(
            "UPDATE audit_auditevent SET actor_name = %s WHERE id = %s", ["mallory", events[2].pk]
        )
        with pytest.raises(CommandError, match=f"BROKEN at event #{events[2].pk}.*edited"):
            verify()

    def test_a_deleted_row_is_caught_at_its_successor(self):
        events = [record(f"demo.{i}", actor=SYSTEM) for i in range(4)]
        raw_update("DELETE FROM audit_auditevent WHERE id = %s", [events[1].pk])
        with pytest.raises(CommandError, match=f"#{events[2].pk}.*removed"):
            verify()

    def test_an_empty_log_verifies(self):
        assert "0 events verified" in verify()


@pytest.mark.django_db
@pytest.mark.skipif("connection.vendor != 'postgresql'")
class TestPostgresTrigger:
    def test_update_and_delete_are_refused_by_the_database(self):
        event = record("demo.locked", actor=SYSTEM)
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            AuditEvent.objects.filter(pk=event.pk).update(actor_name="mallory")
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            AuditEvent.objects.filter(pk=event.pk).delete()
        assert AuditEvent.objects.get(pk=event.pk).actor_name == "tests"


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_do_not_fork_the_chain():
    writers, per_writer = 4, 15
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(per_writer):
                record(f"demo.concurrent.{n}.{i}", actor=SYSTEM)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert AuditEvent.objects.count() == writers * per_writer
    prev_hashes = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(prev_hashes)) == len(prev_hashes), "two events share a parent: a fork"
    assert f"{writers * per_writer} events verified" in verify()
