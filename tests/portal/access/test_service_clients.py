"""Service clients: non-human API principals with scopes, rotation and no console."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from portal.access import bearer_tokens, service_clients
from portal.access.actors import Actor
from portal.access.bearer_tokens import hash_token
from portal.access.models import BearerToken, ServiceClient
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def command(*args):
    out = StringIO()
    call_command("api_client", *args, stdout=out)
    return out.getvalue()


def bearer(raw):
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_create_prints_the_token_once_on_its_last_line_and_audits_without_it():
    out = command("create", "fleet-api", "--scopes", "messages:send,messages:read")
    raw = out.strip().splitlines()[-1]
    assert raw.startswith("fgs_")
    client = ServiceClient.objects.get(name="fleet-api")
    assert client.scopes == ["messages:read", "messages:send"]
    assert BearerToken.objects.get().token_hash == hash_token(raw)
    event = AuditEvent.objects.get(action="service_client.create")
    assert raw not in str(event.params) and event.actor_name.startswith("cli:")
    listing = command("list")
    assert "fleet-api" in listing and raw not in listing


def test_bad_names_scopes_and_duplicates_are_command_errors():
    with pytest.raises(CommandError, match="Unknown scopes: admin"):
        command("create", "fleet-api", "--scopes", "admin")
    with pytest.raises(CommandError, match="lower-case"):
        command("create", "Fleet API", "--scopes", "events:read")
    command("create", "fleet-api", "--scopes", "events:read")
    with pytest.raises(CommandError, match="already exists"):
        command("create", "fleet-api", "--scopes", "events:read")
    with pytest.raises(CommandError, match="no service client"):
        command("revoke", "nobody")
    assert ServiceClient.objects.count() == 1


def test_a_client_may_do_only_what_its_scopes_grant(client):
    _client, raw = service_clients.create_client(SYSTEM, "dispatch-worker", ["events:read"])
    # The dead-letter queue needs view_console, which no scope grants.
    response = client.get("/api/queue/dead-letter", **bearer(raw))
    assert response.status_code == 403
    denial = AuditEvent.objects.filter(outcome="denied").latest("id")
    assert (denial.actor_type, denial.actor_name) == ("client", "dispatch-worker")
    actor = Actor(kind="client", name="dispatch-worker", role="service-client", client=_client)
    assert actor.can("read_events") and not actor.can("send_messages")
    assert not actor.can("view_console") and not actor.can("manage_service_clients")


def test_a_client_token_never_opens_the_console(client):
    _client, raw = service_clients.create_client(SYSTEM, "fleet-api", ["messages:read"])
    response = client.get(reverse("console:dashboard"), **bearer(raw))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_rotation_keeps_both_tokens_valid_for_the_overlap_then_only_the_new_one(client):
    _client, old = service_clients.create_client(SYSTEM, "fleet-api", ["events:read"])
    _token, new = service_clients.rotate_client(SYSTEM, "fleet-api", grace_hours=2)
    assert bearer_tokens.authenticate(old) is not None
    assert bearer_tokens.authenticate(new) is not None
    BearerToken.objects.filter(token_hash=hash_token(old)).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )  # the overlap has passed
    assert bearer_tokens.authenticate(old) is None
    assert bearer_tokens.authenticate(new) is not None
    response = client.get("/api/queue/dead-letter", **bearer(old))
    assert response.status_code == 401
    event = AuditEvent.objects.get(action="service_client.rotate")
    assert event.params["old_tokens"] and new not in str(event.params)


def test_rotation_with_no_overlap_ends_the_old_token_now():
    _client, old = service_clients.create_client(SYSTEM, "fleet-api", ["events:read"])
    service_clients.rotate_client(SYSTEM, "fleet-api", grace_hours=0)
    assert bearer_tokens.authenticate(old) is None


def test_revoking_a_client_stops_every_token(client):
    _client, raw = service_clients.create_client(SYSTEM, "fleet-api", ["events:read"])
    service_clients.rotate_client(SYSTEM, "fleet-api")
    out = command("revoke", "fleet-api")
    assert "Revoked" in out
    assert bearer_tokens.authenticate(raw) is None
    assert not BearerToken.objects.filter(revoked_at__isnull=True).exists()
    assert client.get("/api/queue/dead-letter", **bearer(raw)).status_code == 401


def test_only_admins_manage_clients_in_the_console(client, otto_operator):
    client.force_login(otto_operator)
    assert client.get(reverse("console:service_clients")).status_code == 403
    response = client.post(
        reverse("console:service_client_create"),
        {"name": "x", "scopes": ["events:read"], "expires_days": "30"},
    )
    assert response.status_code == 403
    assert not ServiceClient.objects.exists()
    with pytest.raises(Exception, match="may not"):
        service_clients.create_client(
            Actor.from_request(_request_of(otto_operator)), "x", ["events:read"]
        )


def _request_of(user):
    request = RequestFactory().get("/")
    request.user = user
    return request


def test_an_admin_creates_rotates_and_revokes_in_the_console(client, ada_admin):
    client.force_login(ada_admin)
    response = client.post(
        reverse("console:service_client_create"),
        {
            "name": "fleet-api",
            "description": "Fleet core",
            "scopes": ["messages:send"],
            "expires_days": "90",
        },
    )
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    raw = response.context["created"]
    assert raw.startswith("fgs_") and raw.encode() in response.content
    page = client.get(reverse("console:service_clients"))
    assert b"fleet-api" in page.content and raw.encode() not in page.content
    response = client.post(
        reverse("console:service_client_rotate", args=["fleet-api"]), {"grace_hours": "1"}
    )
    new = response.context["created"]
    assert new != raw and bearer_tokens.authenticate(raw) is not None
    response = client.post(reverse("console:service_client_revoke", args=["fleet-api"]))
    assert response.status_code == 302
    assert bearer_tokens.authenticate(new) is None
    actions = list(
        AuditEvent.objects.filter(actor_name="ada-admin", action__startswith="service_client.")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["service_client.create", "service_client.rotate", "service_client.revoke"]


def test_bad_console_input_is_a_form_error(client, ada_admin):
    client.force_login(ada_admin)
    response = client.post(
        reverse("console:service_client_create"),
        {"name": "Not A Slug!", "scopes": ["events:read"], "expires_days": "30"},
    )
    assert response.status_code == 400 and b"lower-case" in response.content
    response = client.post(
        reverse("console:service_client_create"), {"name": "ok", "expires_days": "30"}
    )
    assert response.status_code == 400
    assert not ServiceClient.objects.exists()
