"""The People page: role source, last sign-in and method; no hand-made roles for SSO users."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from portal.access.actors import role_of
from portal.audit.models import AuditEvent
from tests.conftest import PERSONA_PASSWORD, PERSONAS
from tests.portal.access.sso_support import ENTRA_STAFF, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_only_admins_see_people(client, personas):
    client.force_login(personas["operator"])
    assert client.get("/people/").status_code == 403


def test_people_shows_role_source_last_sign_in_and_method(client, emulator, sso_settings, personas):
    sign_in(client, emulator, ENTRA_STAFF["support"])
    client.logout()
    client.post("/login/", {"username": PERSONAS["admin"], "password": PERSONA_PASSWORD})
    page = client.get("/people/").content.decode()
    entra_row = page.split(ENTRA_STAFF["support"], 1)[1].split("</tr>")[0]
    assert "Entra ID" in entra_row and "Portal.Support" in entra_row
    assert "Microsoft Entra ID with MFA" in entra_row and "<select" not in entra_row
    admin_row = page.split(f"<td>{PERSONAS['admin']}</td>", 1)[1].split("</tr>")[0]
    assert "local" in admin_row and ">Password<" in admin_row.replace("<td>", ">")
    viewer_row = page.split(f"<td>{PERSONAS['viewer']}</td>", 1)[1].split("</tr>")[0]
    assert "never" in viewer_row and "<select" in viewer_row


def test_an_admin_changes_a_local_role_but_not_an_sso_role(
    client, emulator, sso_settings, personas
):
    sign_in(client, emulator, ENTRA_STAFF["viewer"])
    entra_user = get_user_model().objects.get(username=ENTRA_STAFF["viewer"])
    client.logout()
    client.force_login(personas["admin"])
    assert client.post(f"/people/{PERSONAS['viewer']}/role", {"role": "support"}).status_code == 302
    assert role_of(get_user_model().objects.get(username=PERSONAS["viewer"])) == "support"
    refused = client.post(f"/people/{ENTRA_STAFF['viewer']}/role", {"role": "admin"})
    assert refused.status_code == 400
    assert b"comes from the app roles assigned in Entra ID" in refused.content
    assert role_of(get_user_model().objects.get(pk=entra_user.pk)) == "viewer"
    assert not AuditEvent.objects.filter(
        action="user.set_role", target_id=str(entra_user.pk), actor_name=PERSONAS["admin"]
    ).exists()


def test_a_bad_role_is_a_clear_400(client, personas):
    client.force_login(personas["admin"])
    response = client.post(f"/people/{PERSONAS['viewer']}/role", {"role": "overlord"})
    assert response.status_code == 400 and b"Unknown role" in response.content
    assert client.post("/people/nobody/role", {"role": "viewer"}).status_code == 400
