import pytest
from django.urls import reverse

from portal.audit.models import AuditEvent
from portal.runtime import registry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


def test_everyone_sees_the_values_and_defaults(client, vera_viewer):
    client.force_login(vera_viewer)
    response = client.get(reverse("console:settings"))
    assert response.status_code == 200
    assert b"Real-time sync" in response.content and b"(default)" in response.content
    assert b"Turn off" not in response.content  # viewers get no buttons


def test_an_operator_turns_realtime_sync_off_with_before_and_after_audited(client, otto_operator):
    client.force_login(otto_operator)
    response = client.post(
        reverse("console:settings_change", args=["ENABLE_REALTIME_SYNC"]),
        {"value": "false", "reason": "429 storm"},
        follow=True,
    )
    assert b"Real-time sync is now off" in response.content
    assert registry.get("ENABLE_REALTIME_SYNC") is False
    event = AuditEvent.objects.get(action="settings.change")
    assert event.params == {"before": True, "after": False}
    assert event.reason == "429 storm"


def test_bad_values_are_refused_with_a_message(client, otto_operator):
    client.force_login(otto_operator)
    url = reverse("console:settings_change", args=["SYNC_INTERVAL_MINUTES"])
    for bad, message in (("0", b"at least 1"), ("abc", b"whole number"), ("99999", b"at most")):
        response = client.post(url, {"value": bad}, follow=True)
        assert message in response.content
    assert registry.get("SYNC_INTERVAL_MINUTES") == 5
    assert not AuditEvent.objects.filter(action="settings.change", outcome="success").exists()


def test_support_cannot_change_settings_and_unknown_keys_are_refused(
    client, sam_support, otto_operator
):
    client.force_login(sam_support)
    url = reverse("console:settings_change", args=["SYNC_INTERVAL_MINUTES"])
    assert client.post(url, {"value": "30"}).status_code == 403
    client.force_login(otto_operator)
    response = client.post(
        reverse("console:settings_change", args=["NOPE"]), {"value": "1"}, follow=True
    )
    assert b"There is no setting NOPE" in response.content


def test_one_save_per_group_stores_only_what_changed(client, otto_operator):
    client.force_login(otto_operator)
    page = client.get(reverse("console:settings")).content.decode()
    assert 'id="settings-sync"' in page and 'id="settings-alerts"' in page
    assert page.count("Save sync settings") == 1
    url = reverse("console:settings_group_change", args=["Sync"])
    keys = {"keys": ["ENABLE_REALTIME_SYNC", "SYNC_INTERVAL_MINUTES"]}
    # The checkbox left ticked, the interval changed: one change, one audit event.
    response = client.post(
        url,
        {
            **keys,
            "value-ENABLE_REALTIME_SYNC": "true",
            "value-SYNC_INTERVAL_MINUTES": "15",
            "reason": "quieter",
        },
        follow=True,
    )
    assert b"Sync interval (minutes) is now 15" in response.content
    assert registry.get("SYNC_INTERVAL_MINUTES") == 15 and registry.get("ENABLE_REALTIME_SYNC")
    events = AuditEvent.objects.filter(action="settings.change", outcome="success")
    assert [(e.target_id, e.params["after"], e.reason) for e in events] == [
        ("SYNC_INTERVAL_MINUTES", 15, "quieter")
    ]
    # One bad value: nothing of the group is stored.
    response = client.post(url, {**keys, "value-SYNC_INTERVAL_MINUTES": "0"}, follow=True)
    assert b"Nothing was saved" in response.content
    assert registry.get("ENABLE_REALTIME_SYNC") is True  # the unticked box was not applied
    assert registry.get("SYNC_INTERVAL_MINUTES") == 15
