import itertools

import pytest
from django.contrib.auth.models import Group

from portal.access.actors import Actor, role_of
from portal.access.roles import MATRIX, PERMISSIONS, ROLES, SCOPES, matrix_markdown


@pytest.mark.django_db
def test_each_role_group_holds_exactly_its_matrix_permissions():
    for role in ROLES:
        group = Group.objects.get(name=role)
        assert set(group.permissions.values_list("codename", flat=True)) == set(MATRIX[role])


def test_roles_are_cumulative_and_only_admins_touch_credentials_users_and_recovery():
    for lower, higher in itertools.pairwise(ROLES):
        assert MATRIX[lower] < MATRIX[higher]
    for codename in (
        "rotate_credentials",
        "connect_tenant",
        "manage_users",
        "manage_api_tokens",
        "run_recovery",
        "view_secrets_metadata",
        "use_django_admin",
    ):
        assert [role for role in ROLES if codename in MATRIX[role]] == ["admin"]


def test_the_viewer_reads_but_changes_nothing_and_cannot_read_the_audit_log():
    # Reading only: the console, outbound messages' status (not their text), the event feed.
    assert MATRIX["viewer"] == {"view_console", "view_messages", "read_events"}


def test_message_text_sending_and_the_gateways_admin_pages_are_held_back():
    assert [r for r in ROLES if "view_message_bodies" in MATRIX[r]] == ["operator", "admin"]
    assert [r for r in ROLES if "send_messages" in MATRIX[r]] == ["operator", "admin"]
    for codename in ("manage_service_clients", "manage_event_endpoints"):
        assert [role for role in ROLES if codename in MATRIX[role]] == ["admin"]


def test_service_client_scopes_grant_only_gateway_permissions():
    granted = {codename for codenames in SCOPES.values() for codename in codenames}
    assert granted <= set(PERMISSIONS)
    assert granted == {
        "send_messages",
        "view_messages",
        "view_message_bodies",
        "read_events",
        "manage_event_endpoints",
    }


def test_support_may_do_single_item_remediation_only():
    support_only = MATRIX["support"] - MATRIX["viewer"]
    assert {"retry_job", "sync_delta"} <= support_only
    assert not {"retry_all_jobs", "sync_full", "sync_reset", "discard_job"} & MATRIX["support"]


def test_operators_have_bulk_subscription_and_runtime_settings_actions():
    assert {
        "retry_all_jobs",
        "setup_subscriptions",
        "cleanup_subscriptions",
        "change_runtime_settings",
        "pause_processing",
    } <= MATRIX["operator"]


def test_every_permission_is_granted_to_someone_and_printed_in_the_matrix():
    assert set(PERMISSIONS) == set(MATRIX["admin"])
    table = matrix_markdown()
    for codename in PERMISSIONS:
        assert f"`{codename}`" in table


@pytest.mark.django_db
class TestPersonas:
    def test_role_of_and_can(self, personas):
        for role, user in personas.items():
            actor = Actor(kind="user", name=user.username, role=role_of(user), user=user)
            assert actor.role == role
            granted = {codename for codename in PERMISSIONS if actor.can(codename)}
            assert granted == set(MATRIX[role])

    def test_an_inactive_user_can_do_nothing(self, ada_admin):
        ada_admin.is_active = False
        ada_admin.save()
        actor = Actor(kind="user", name="ada", role="admin", user=ada_admin)
        assert not actor.can("view_console")
        assert role_of(ada_admin) == ""

    def test_the_system_actor_can_do_everything(self):
        system = Actor.system("scheduler")
        assert all(system.can(codename) for codename in PERMISSIONS)
