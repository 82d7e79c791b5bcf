import io
import json
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command

from portal.access import users
from portal.access.actors import Actor, role_of
from portal.approvals.gate import policy
from portal.approvals.services import set_policy
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def run(*args, stdin=None):
    out = io.StringIO()
    if stdin is not None:
        old, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            call_command("portal_user", *args, stdout=out)
        finally:
            sys.stdin = old
    else:
        call_command("portal_user", *args, stdout=out)
    return out.getvalue()


def test_create_prints_a_generated_password_once_and_audits_without_it():
    output = run("create", "nina", "--role", "operator")
    password = output.split("Password (shown once): ")[1].splitlines()[0].strip()
    assert "Authenticator set-up link (once, 24 h): http" in output  # MFA at account creation
    user = get_user_model().objects.get(username="nina")
    assert user.check_password(password)
    assert role_of(user) == "operator"
    event = AuditEvent.objects.get(action="user.create")
    assert event.actor_type == "system" and event.actor_name.startswith("cli:")
    assert event.params == {"username": "nina", "role": "operator"}
    assert password not in str(event.params)


def test_create_with_password_stdin_prints_no_password():
    output = run(
        "create",
        "omar",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="a long enough passphrase 9\n",
    )
    assert "Password" not in output
    assert (
        get_user_model().objects.get(username="omar").check_password("a long enough passphrase 9")
    )


def test_create_refuses_duplicates_and_weak_passwords_with_a_message():
    run("create", "nina", "--role", "operator")
    with pytest.raises(CommandError, match="already exists"):
        run("create", "NINA", "--role", "viewer")
    with pytest.raises(CommandError, match="too weak"):
        run("create", "weak", "--role", "viewer", "--password-stdin", stdin="123\n")
    assert not get_user_model().objects.filter(username="weak").exists()


def test_set_role_records_before_and_after():
    run("create", "nina", "--role", "viewer")
    run("set-role", "nina", "admin")
    assert role_of(get_user_model().objects.get(username="nina")) == "admin"
    event = AuditEvent.objects.get(action="user.set_role")
    assert (event.params["before"], event.params["after"]) == ("viewer", "admin")


def test_deactivate_ends_the_users_sessions(client):
    run("create", "nina", "--role", "support")
    user = get_user_model().objects.get(username="nina")
    client.force_login(user)
    run("deactivate", "nina")
    user.refresh_from_db()
    assert not user.is_active
    assert client.get("/").status_code == 302
    assert AuditEvent.objects.filter(action="user.deactivate").exists()


def test_unknown_users_and_roles_are_reported():
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        run("set-role", "ghost", "admin")
    with pytest.raises(CommandError):
        run("create", "x", "--role", "superhero")


def test_create_demo_users_makes_one_per_role_and_never_overwrites(settings, tmp_path):
    settings.EMULATOR_STATE_DIR = tmp_path
    out = io.StringIO()
    call_command("create_demo_users", stdout=out)
    listed = out.getvalue().split("when it is up")[1]
    assert listed.count("demo-") == 5 and "demo-operator-2 operator" in listed
    # runportal's start-up box reads their passwords from the demo's state, owner-only.
    saved = tmp_path / "demo-passwords.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    passwords = json.loads(saved.read_text())
    assert (
        get_user_model().objects.get(username="demo-admin").check_password(passwords["demo-admin"])
    )
    assert passwords["demo-admin"] not in out.getvalue()
    again = io.StringIO()
    call_command("create_demo_users", stdout=again)
    assert "already exist" in again.getvalue()
    assert get_user_model().objects.filter(username__startswith="demo-").count() == 5


def test_the_demo_turns_on_approvals_for_bulk_operations_above_100_once(settings, tmp_path):
    settings.EMULATOR_STATE_DIR = tmp_path
    call_command("create_demo_users", stdout=io.StringIO())
    current = policy()
    assert current.actions == {"jobs.retry_all", "subscriptions.bulk_renew"}
    assert current.bulk_threshold == 100
    set_policy(Actor.system("tests"), [], 100)  # an admin turned them off: the demo leaves it
    call_command("create_demo_users", stdout=io.StringIO())
    assert policy().actions == frozenset()


def test_a_web_user_without_manage_users_is_refused_and_audited(otto_operator):
    actor = Actor(kind="user", name="otto-operator", role="operator", user=otto_operator)
    with pytest.raises(PermissionDenied):
        users.create_user(actor, "sneaky", "admin")
    assert not get_user_model().objects.filter(username="sneaky").exists()
    assert AuditEvent.objects.filter(action="user.create", outcome="denied").exists()


def test_set_password_generates_one_shows_it_once_and_audits_without_it(client):
    run("create", "nina", "--role", "operator")
    client.force_login(get_user_model().objects.get(username="nina"))
    output = run("set-password", "nina")
    password = output.split("Password (shown once): ")[1].splitlines()[0].strip()
    user = get_user_model().objects.get(username="nina")
    assert user.check_password(password)
    event = AuditEvent.objects.get(action="user.set_password")
    assert event.params == {"username": "nina", "generated": True}
    assert password not in str(event.params) and password not in event.reason
    # The session signed in with the old password has ended.
    assert client.get("/").status_code == 302


def test_set_password_reads_stdin_and_refuses_a_weak_or_missing_one():
    run("create", "nina", "--role", "viewer")
    output = run("set-password", "nina", "--password-stdin", stdin="a long enough passphrase 7\n")
    assert "Password (shown once)" not in output
    assert (
        get_user_model().objects.get(username="nina").check_password("a long enough passphrase 7")
    )
    assert AuditEvent.objects.get(action="user.set_password").params["generated"] is False
    with pytest.raises(CommandError, match="too weak"):
        run("set-password", "nina", "--password-stdin", stdin="123\n")
    with pytest.raises(CommandError, match="No password on standard input"):
        run("set-password", "nina", "--password-stdin", stdin="\n")
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("set-password", "nobody")
    assert (
        get_user_model().objects.get(username="nina").check_password("a long enough passphrase 7")
    )
