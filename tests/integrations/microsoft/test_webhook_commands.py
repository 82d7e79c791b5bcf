"""setup_webhooks / cleanup_webhooks against the emulator, with the live receiver."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from integrations.microsoft.models import Subscription
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


class TestSetupWebhooks:
    def test_it_creates_subscriptions_through_a_real_handshake(
        self, webhook_settings, monitored, emulator
    ):
        output = run("setup_webhooks")
        assert "setup_webhooks: 2 created" in output
        remote = {s["id"]: s for s in emulator.control.subscriptions()}
        rows = list(Subscription.objects.filter(state="active"))
        assert {r.graph_id for r in rows} == set(remote)
        for row in rows:
            spec = remote[row.graph_id]
            assert spec["clientState"] == row.client_state()
            endpoint = "mail" if row.kind == "messages" else "teams"
            base = webhook_settings.PUBLIC_BASE_URL
            assert spec["notificationUrl"] == f"{base}/api/webhooks/{endpoint}"
            assert spec["lifecycleNotificationUrl"].endswith("/api/webhooks/lifecycle")
        # Graph validated both URLs of each subscription against the live receiver.
        validations = [
            d
            for d in emulator.control.requests_log(path="/subscriptions$")
            if d["method"] == "POST"
        ]
        assert len(validations) == 2 and all(v["status"] == 201 for v in validations)
        event = AuditEvent.objects.get(action="webhooks.setup")
        assert event.actor_name.startswith("cli:") and event.params["created"] == 2
        assert "client" not in json.dumps(event.params).lower()

    def test_it_is_idempotent(self, webhook_settings, monitored, emulator):
        run("setup_webhooks")
        output = run("setup_webhooks")
        assert "2 unchanged" in output and "created" not in output.splitlines()[-1]
        assert len(emulator.control.subscriptions()) == 2
        assert AuditEvent.objects.filter(action="webhooks.setup").count() == 2

    def test_dry_run_changes_nothing(self, webhook_settings, monitored, emulator):
        output = run("setup_webhooks", "--dry-run")
        assert "would be created" in output and "Dry run" in output
        assert emulator.control.subscriptions() == [] and not Subscription.objects.exists()
        assert AuditEvent.objects.get(action="webhooks.setup").params["dry_run"] is True

    def test_a_failing_handshake_fails_the_command(self, webhook_settings, monitored, emulator):
        webhook_settings.PUBLIC_BASE_URL = webhook_settings.PUBLIC_BASE_URL + "/nowhere"
        with pytest.raises(CommandError) as caught:
            run("setup_webhooks")
        assert caught.value.returncode == 1
        assert emulator.control.subscriptions() == []
        assert set(Subscription.objects.values_list("state", flat=True)) == {"failed"}
        assert AuditEvent.objects.get(action="webhooks.setup").outcome == "failure"
        # Once the URL is right, setup succeeds and forgets the failed attempts.
        webhook_settings.PUBLIC_BASE_URL = webhook_settings.PUBLIC_BASE_URL[: -len("/nowhere")]
        run("setup_webhooks")
        assert set(Subscription.objects.values_list("state", flat=True)) == {"active"}


class TestCleanupWebhooks:
    def test_it_removes_orphans_both_ways(self, webhook_settings, monitored, emulator):
        run("setup_webhooks")
        mail = Subscription.objects.get(kind="messages")
        teams = Subscription.objects.get(kind="chatMessages")
        # Orphan in Graph: the database forgot it. Orphan here: Graph no longer has it.
        Subscription.objects.filter(pk=mail.pk).delete()
        emulator.control.remove_subscription(teams.graph_id)
        dry = run("cleanup_webhooks", "--dry-run")
        assert "would be deleted: orphan" in dry and "not in Graph" in dry
        assert len(emulator.control.subscriptions()) == 1
        output = run("cleanup_webhooks")
        assert "1 deleted, 1 rows deleted" in output
        assert emulator.control.subscriptions() == []
        assert not Subscription.objects.exists()
        events = AuditEvent.objects.filter(action="webhooks.cleanup")
        assert [e.params["dry_run"] for e in events.order_by("id")] == [True, False]

    def test_subscriptions_of_other_deployments_are_left_alone(
        self, webhook_settings, monitored, emulator
    ):
        run("setup_webhooks")
        Subscription.objects.all().delete()
        webhook_settings.PUBLIC_BASE_URL = "http://127.0.0.1:1"
        output = run("cleanup_webhooks")
        assert "2 skipped" in output and len(emulator.control.subscriptions()) == 2
