import pytest
from django.urls import reverse

from portal.access.actors import Actor
from portal.audit.services import record
from tests.conftest import NAV_BY_ROLE

pytestmark = pytest.mark.django_db

VIEWER_NAV, SUPPORT_NAV, ADMIN_NAV = (NAV_BY_ROLE[r] for r in ("viewer", "support", "admin"))


def test_it_shows_real_counts_from_the_database(client, personas):
    record("demo", actor=Actor.system("tests"), outcome="denied")
    client.force_login(personas["operator"])
    response = client.get(reverse("console:dashboard"))
    assert response.status_code == 200
    assert response.context["denied_24h"] == 1
    assert dict(response.context["users_by_role"]) == {
        "viewer": 1, "support": 1, "operator": 1, "admin": 1}


def test_viewers_see_it_without_the_audit_trail(client, vera_viewer):
    record("demo.secret-ish", actor=Actor.system("tests"))
    client.force_login(vera_viewer)
    response = client.get(reverse("console:dashboard"))
    assert response.status_code == 200
    assert b"demo.secret-ish" not in response.content
    assert b"Audit log" not in response.content


def test_the_live_refresh_swaps_only_the_health_partial(client, vera_viewer):
    client.force_login(vera_viewer)
    body = client.get(reverse("console:dashboard"), headers={"HX-Request": "true"}).content
    assert body.decode().lstrip().startswith('<div id="health"')


@pytest.mark.parametrize(("role", "visible", "hidden"), [
    ("viewer", VIEWER_NAV, ["Verify", "Credentials", "Recovery", "Audit log", "Django admin"]),
    ("support", SUPPORT_NAV, ["Credentials", "Recovery", "Django admin"]),
    ("operator", SUPPORT_NAV, ["Credentials", "Recovery", "Django admin"]),
    ("admin", ADMIN_NAV, []),
])
def test_navigation_shows_only_what_the_role_may_use(client, personas, role, visible, hidden):
    client.force_login(personas[role])
    labels = [item["label"] for item in
              client.get(reverse("console:dashboard")).context["nav_items"]]
    assert labels == visible
    assert not set(hidden) & set(labels)
