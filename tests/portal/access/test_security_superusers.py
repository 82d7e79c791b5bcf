"""No superusers: the flag is no role, the commands that make or change them are audited or
refused, and one that exists anyway raises an alert.

Found: `createsuperuser` and `changepassword` wrote no audit event, and `is_superuser` made
an account an admin (role_of) and more (Django's has_perm answers True to everything).
"""

from __future__ import annotations

import io
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command, get_commands
from django.urls import reverse

from portal.access import users
from portal.access.actors import Actor, role_of
from portal.access.api_tokens import create_token
from portal.access.models import EntraAccount
from portal.alerts import services
from portal.alerts.models import Alert
from portal.alerts.rules import RULES
from portal.audit.models import AuditEvent
from tests.conftest import PERSONA_PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a brand new passphrase 77"


def run(command, *args, stdin=None):
    out = io.StringIO()
    old, sys.stdin = sys.stdin, io.StringIO(stdin or "")
    try:
        call_command(command, *args, stdout=out)
    finally:
        sys.stdin = old
    return out.getvalue()


def superuser(username="root", **extra):
    return get_user_model().objects.create_superuser(username, password=PERSONA_PASSWORD, **extra)


# --- the commands ------------------------------------------------------------------------------


def test_the_portal_owns_both_commands():
    commands = get_commands()
    assert commands["createsuperuser"] != "django.contrib.auth"
    assert commands["changepassword"] != "django.contrib.auth"


@pytest.mark.parametrize(
    "args", [(), ("--username", "root", "--email", "r@example.com", "--noinput")]
)
def test_createsuperuser_is_refused_with_a_pointer_to_portal_user(args, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", NEW_PASSWORD)
    with pytest.raises(CommandError, match=r"portal_user create NAME --role admin"):
        run("createsuperuser", *args)
    assert not get_user_model().objects.exists()


def test_changepassword_goes_through_the_audited_service(sam_support):
    output = run("changepassword", "sam-support", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert "Password changed for sam-support" in output
    sam_support.refresh_from_db()
    assert sam_support.check_password(NEW_PASSWORD)
    event = AuditEvent.objects.get(action="user.set_password")
    assert event.actor_type == "system" and event.actor_name.startswith("cli:")
    assert event.target_id == str(sam_support.pk)
    assert event.params["username"] == "sam-support" and not event.params["generated"]
    assert NEW_PASSWORD not in str(event.params) + event.reason


def test_changepassword_refuses_what_the_service_refuses(sam_support):
    with pytest.raises(CommandError, match="too weak"):
        run("changepassword", "sam-support", "--password-stdin", stdin="short\n")
    with pytest.raises(CommandError, match="No user named"):
        run("changepassword", "nobody", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    with pytest.raises(CommandError, match="No password"):
        run("changepassword", "sam-support", "--password-stdin", stdin="\n")
    entra = get_user_model().objects.create_user("kim@contoso.example")
    EntraAccount.objects.create(user=entra, tenant_id="t", object_id="o")
    with pytest.raises(CommandError, match="signs in with Microsoft"):
        run("changepassword", entra.username, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    sam_support.refresh_from_db()
    assert sam_support.check_password(PERSONA_PASSWORD)
    assert not AuditEvent.objects.filter(action="user.set_password", outcome="success").exists()


def test_setting_a_password_needs_manage_users(sam_support):
    actor = Actor(kind="user", name="sam-support", role="support", user=sam_support)
    with pytest.raises(PermissionDenied):
        users.set_password(actor, "sam-support", NEW_PASSWORD)
    assert AuditEvent.objects.filter(action="user.set_password", outcome="denied").exists()


# --- the flag is no role -----------------------------------------------------------------------


def test_a_superuser_is_no_admin():
    root = superuser()
    assert role_of(root) == ""
    actor = Actor(kind="user", name="root", role=role_of(root), user=root)
    for codename in ("view_console", "manage_users", "use_django_admin"):
        assert not actor.can(codename)


def test_a_superuser_in_a_role_group_has_that_role_and_no_more(personas):
    viewer = personas["viewer"]
    viewer.is_superuser = True
    viewer.save()
    assert role_of(viewer) == "viewer"
    actor = Actor(kind="user", name=viewer.username, role="viewer", user=viewer)
    assert actor.can("view_console") and not actor.can("manage_users")


def test_a_superuser_cannot_sign_in_and_an_existing_session_ends(client, personas):
    admin = personas["admin"]
    assert (
        client.post(
            reverse("login"), {"username": admin.username, "password": PERSONA_PASSWORD}
        ).status_code
        == 302
    )
    assert client.get("/").status_code == 200
    admin.is_superuser = True
    admin.save()
    assert client.get("/").status_code == 302  # signed out
    client.logout()
    response = client.post(
        reverse("login"), {"username": admin.username, "password": PERSONA_PASSWORD}
    )
    assert response.status_code == 200 and b"Wrong username or password" in response.content


def test_a_superusers_api_token_gets_nothing_from_the_flag(client):
    superuser("root")
    _, raw = create_token(Actor.system("tests"), "root", "scripts")
    response = client.get("/api/queue/dead-letter", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 403


# --- an existing superuser raises an alert -----------------------------------------------------


def test_an_existing_superuser_raises_a_security_alert_until_the_flag_is_cleared(ada_admin):
    rule = next(rule for rule in RULES if rule.name == "superuser_account")
    assert rule.security
    services.evaluate_all()
    assert Alert.objects.get(rule="superuser_account").state == "ok"
    superuser("root")
    services.evaluate_all()
    alert = Alert.objects.get(rule="superuser_account")
    assert alert.state == "firing" and alert.value == 1 and "root" in alert.message
    run("portal_user", "set-role", "root", "viewer")
    root = get_user_model().objects.get(username="root")
    assert not root.is_superuser and role_of(root) == "viewer"
    change = AuditEvent.objects.filter(action="user.set_role", target_id=str(root.pk)).get()
    assert change.params["superuser_flag_cleared"] is True
    services.evaluate_all()
    assert Alert.objects.get(rule="superuser_account").state == "ok"
