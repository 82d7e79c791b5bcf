"""Walk every API URL that names a resource, as the resource's owner and as foreign principals.

Every such URL must declare its scope (framework.Owned or TENANT_WIDE), or this walk fails:
a new endpoint cannot ship unscoped. For owned resources (event endpoints, their deliveries,
messages), another service client, and a client facing what people made in the console, get
404 from every method, and nothing changes; the owner and people (who see every resource, as
the console does) do not get 404. Idempotency keys are per principal: the same key from
another principal of each kind never replays someone else's answer. Tenant-wide resources
follow the role matrix (test_rbac_walk.py).
"""

from __future__ import annotations

import json

import pytest

from integrations.microsoft.models import MonitoredUser, OutboundMessage
from portal.access import bearer_tokens, service_clients
from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.access.roles import SCOPES
from portal.api.framework import TENANT_WIDE, Owned, api_endpoint
from portal.events.endpoints import create_endpoint, send_test
from portal.events.models import EventDelivery, EventEndpoint
from tests.portal.test_rbac_walk import concrete, routes

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
SENDER = "dispatch@fleet.example"
JSON = "application/json"
# A body every owned action accepts, so a visible resource answers as it would in use.
BODY = json.dumps({"since": "2000-01-01T00:00:00Z", "overlapHours": 1})
MAIL = {"channel": "mail", "from": SENDER, "to": ["driver@fleet.example"], "body": "Hello."}


def api_routes_with_ids():
    for route, callback in routes():
        if route.startswith("api/") and "<" in route:
            yield route, callback


def scopes_of(callback) -> dict[str, object]:
    """Method -> declared scope (None: undeclared) of every API endpoint behind a URL; a
    plain view under /api/ declares none."""
    return dict(getattr(callback, "method_scopes", {"ANY": None}))


def principal(name: str) -> tuple[Actor, dict[str, str]]:
    row, raw = service_clients.create_client(SYSTEM, name, list(SCOPES))
    token = bearer_tokens.authenticate(raw)
    actor = Actor(kind="client", name=row.name, role="service-client", token=token, client=row)
    return actor, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def world(settings, client, personas):
    settings.DEBUG = True
    settings.EVENT_ENDPOINT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    MonitoredUser.objects.create(identifier=SENDER)
    owner, owner_auth = principal("fleet-owner")
    _foreign, foreign_auth = principal("fleet-other")
    admin = personas["admin"]
    admin_auth = {"HTTP_AUTHORIZATION": f"Bearer {create_token(SYSTEM, admin.username, 'walk')[1]}"}
    console = Actor(kind="user", name=admin.username, role="admin", user=admin)
    ids: dict[str, dict[str, int]] = {}
    for who, actor, auth in (("owner", owner, owner_auth), ("console", console, admin_auth)):
        endpoint, _secret = create_endpoint(actor, "http://127.0.0.1:9/hook")
        delivery = send_test(actor, endpoint.pk)
        EventDelivery.objects.filter(pk=delivery.pk).update(attempts=1, status="failed")
        response = client.post(
            "/api/messages",
            data=json.dumps(MAIL),
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=f"walk-{who}",
            **auth,
        )
        assert response.status_code == 202, response.content
        ids[who] = {
            "endpoint_id": endpoint.pk,
            "delivery_id": delivery.pk,
            "message_id": response.json()["id"],
        }
    return {
        "ids": ids,
        "auth": {"owner": owner_auth, "foreign": foreign_auth, "admin": admin_auth},
    }


def test_every_api_url_with_an_id_declares_its_scope():
    problems = []
    checked = 0
    for route, callback in api_routes_with_ids():
        for method, scope in scopes_of(callback).items():
            checked += 1
            if scope != TENANT_WIDE and not isinstance(scope, Owned):
                problems.append(f"{method} /{route}: no scope (declare Owned(...) or TENANT_WIDE)")
    assert checked >= 12
    assert problems == [], "\n".join(problems)


def test_the_openapi_document_says_owned_resources_answer_404(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    assert (
        "not the caller's"
        in paths["/api/event-endpoints/{endpointId}"]["get"]["responses"]["404"]["description"]
    )
    assert "404" in paths["/api/event-deliveries/{deliveryId}/replay"]["post"]["responses"]


def test_an_endpoint_naming_a_resource_without_a_scope_cannot_be_declared():
    with pytest.raises(ValueError, match="scope"):
        api_endpoint("/api/things/{thingId}", "GET", "view_console", "A thing.")


def snapshot() -> list[tuple]:
    endpoints = EventEndpoint.objects.order_by("id").values_list(
        "id", "state", "secret_encrypted", "previous_secret_encrypted"
    )
    deliveries = EventDelivery.objects.order_by("id").values_list("id", "status", "job_id")
    messages = OutboundMessage.objects.order_by("id").values_list("id", "status")
    return [*endpoints, *deliveries, *messages]


def test_foreign_principals_get_404_from_every_owned_url_and_change_nothing(client, world):
    ids, auth = world["ids"], world["auth"]
    # (whose resource, who asks, must the answer be 404)
    cases = [
        ("owner", "foreign", True),  # another service client
        ("console", "foreign", True),  # a client facing what people made
        ("console", "owner", True),
        ("owner", "owner", False),
        ("owner", "admin", False),  # people see every resource, as the console does
    ]
    problems = []
    walked = set()
    for route, callback in api_routes_with_ids():
        for method, scope in scopes_of(callback).items():
            if not isinstance(scope, Owned):
                continue
            for whose, who, hidden in cases:
                if scope.param not in ids[whose]:
                    problems.append(f"/{route}: the walk has no {scope.noun} to try; add one")
                    continue
                path = concrete(route, ids[whose])
                walked.add(route)
                before = snapshot()
                if method == "GET":
                    response = client.get(path, **auth[who])
                else:
                    response = client.post(path, data=BODY, content_type=JSON, **auth[who])
                status = response.status_code
                if status >= 500:
                    problems.append(f"{who} {method} {path} ({whose}'s): {status}")
                elif hidden and status != 404:
                    problems.append(f"{who} {method} {path} ({whose}'s): {status}, expected 404")
                elif hidden and snapshot() != before:
                    problems.append(f"{who} {method} {path} ({whose}'s): changed something")
                elif not hidden and status == 404:
                    problems.append(f"{who} {method} {path} ({whose}'s): 404 for a visible one")
    assert len(walked) >= 9, walked
    assert problems == [], "\n".join(problems)


def test_lists_show_a_client_only_what_it_owns(client, world):
    ids, auth = world["ids"], world["auth"]

    def listed(path, key, who):
        return {item["id"] for item in client.get(path, **auth[who]).json()[key]}

    assert listed("/api/event-endpoints", "endpoints", "owner") == {ids["owner"]["endpoint_id"]}
    assert listed("/api/event-endpoints", "endpoints", "foreign") == set()
    assert listed("/api/event-endpoints", "endpoints", "admin") == {
        ids["owner"]["endpoint_id"],
        ids["console"]["endpoint_id"],
    }
    assert listed("/api/messages", "messages", "owner") == {ids["owner"]["message_id"]}
    assert listed("/api/messages", "messages", "foreign") == set()


def test_an_idempotency_key_never_replays_another_principals_answer(client, world):
    ids, auth = world["ids"], world["auth"]
    for who, key, first in (
        ("foreign", "walk-owner", ids["owner"]["message_id"]),  # another client
        ("admin", "walk-owner", ids["owner"]["message_id"]),  # a person, a client's key
        ("owner", "walk-console", ids["console"]["message_id"]),  # a client, a person's key
    ):
        response = client.post(
            "/api/messages",
            data=json.dumps(MAIL),
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=key,
            **auth[who],
        )
        assert response.status_code == 202, (who, response.content)
        assert response.json()["id"] != first and not response.has_header("Idempotent-Replayed")
