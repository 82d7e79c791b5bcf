"""Settings operators change at run time: validated, permission-checked, audited with before
and after, and read by this process at once (others within the cache's few seconds)."""

import pytest
from django.core.exceptions import PermissionDenied

from portal.access.actors import Actor, role_of
from portal.audit.models import AuditEvent
from portal.runtime import registry
from portal.runtime.models import RuntimeSetting

pytestmark = pytest.mark.django_db


def actor_for(user) -> Actor:
    return Actor(kind="user", name=user.username, user=user, role=role_of(user))


def test_an_operator_changes_a_setting_and_it_is_read_at_once(otto_operator):
    assert registry.get("SYNC_INTERVAL_MINUTES") == 5  # the default, and now cached

    assert (
        registry.set_value(actor_for(otto_operator), "SYNC_INTERVAL_MINUTES", "15", "storm") == 15
    )

    assert registry.get("SYNC_INTERVAL_MINUTES") == 15
    event = AuditEvent.objects.get(action="settings.change", outcome="success")
    assert (event.target_id, event.reason) == ("SYNC_INTERVAL_MINUTES", "storm")
    assert event.params == {"before": 5, "after": 15}


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("SYNC_INTERVAL_MINUTES", "0", "at least 1"),
        ("SYNC_INTERVAL_MINUTES", "1441", "at most 1440"),
        ("SYNC_INTERVAL_MINUTES", "five", "whole number"),
        ("ENABLE_REALTIME_SYNC", "maybe", "on or off"),
        ("NO_SUCH_SETTING", "1", "Unknown setting"),
    ],
)
def test_a_bad_value_is_refused_with_a_reason_and_nothing_changes(otto_operator, key, raw, message):
    with pytest.raises(ValueError, match=message):
        registry.set_value(actor_for(otto_operator), key, raw)
    assert not RuntimeSetting.objects.exists()
    assert not AuditEvent.objects.filter(action="settings.change", outcome="success").exists()


def test_support_may_not_change_settings_and_the_denial_is_audited(sam_support):
    with pytest.raises(PermissionDenied):
        registry.set_value(actor_for(sam_support), "ENABLE_REALTIME_SYNC", "off")
    assert registry.get_uncached("ENABLE_REALTIME_SYNC") is True
    assert AuditEvent.objects.filter(action="settings.change", outcome="denied").count() == 1


def test_a_group_is_stored_whole_or_not_at_all(otto_operator):
    with pytest.raises(ValueError, match="at least 1"):
        registry.set_values(
            actor_for(otto_operator),
            {"ENABLE_REALTIME_SYNC": "off", "SYNC_INTERVAL_MINUTES": "0"},
        )
    assert not RuntimeSetting.objects.exists()

    changed = registry.set_values(
        actor_for(otto_operator), {"ENABLE_REALTIME_SYNC": "off", "SYNC_INTERVAL_MINUTES": "5"}
    )
    assert changed == {"ENABLE_REALTIME_SYNC": False}  # the unchanged one is left alone
    assert AuditEvent.objects.filter(action="settings.change", outcome="success").count() == 1
