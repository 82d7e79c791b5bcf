"""The migration that gives existing event endpoints an owner: the client that made one
through the API (its audit row says so), else the console."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model

from portal.access import bearer_tokens, service_clients
from portal.access.actors import Actor
from portal.events.endpoints import create_endpoint
from portal.events.models import EventEndpoint
from portal.lib.crypto import encrypt

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
migration = importlib.import_module("portal.events.migrations.0006_endpoint_owner")


def bare(created_by: str) -> EventEndpoint:
    """An endpoint as the API made them before owners (no audit row of its creation)."""
    return EventEndpoint.objects.create(
        url="http://127.0.0.1:9/x", secret_encrypted=encrypt("s"), created_by=created_by
    )


def test_existing_endpoints_get_their_creator_client_or_the_console(settings, personas):
    settings.DEBUG = True
    settings.EVENT_ENDPOINT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    fleet, raw = service_clients.create_client(SYSTEM, "fleet-ops", ["events:manage"])
    token = bearer_tokens.authenticate(raw)
    as_client = Actor(kind="client", name="fleet-ops", role="", token=token, client=fleet)
    admin = personas["admin"]
    as_admin = Actor(kind="user", name=admin.username, role="admin", user=admin)
    by_client = create_endpoint(as_client, "http://127.0.0.1:9/a")[0]
    by_admin = create_endpoint(as_admin, "http://127.0.0.1:9/b")[0]
    unaudited = bare("fleet-ops")
    service_clients.create_client(SYSTEM, "shared-name", ["events:read"])
    get_user_model().objects.create_user("shared-name")
    ambiguous = bare("shared-name")
    EventEndpoint.objects.update(owner_client=None)  # as before the migration

    migration.assign_owners(apps, None)

    owners = dict(EventEndpoint.objects.values_list("pk", "owner_client__name"))
    assert owners == {
        by_client.pk: "fleet-ops",
        by_admin.pk: None,  # the console
        unaudited.pk: "fleet-ops",
        ambiguous.pk: None,  # a person has that name too: the console keeps it
    }
