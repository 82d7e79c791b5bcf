import pytest
from django.urls import reverse

from portal.access.bearer_tokens import hash_token
from portal.access.models import BearerToken
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_only_admins_manage_tokens(client, otto_operator):
    client.force_login(otto_operator)
    assert client.get(reverse("console:tokens")).status_code == 403
    assert client.post(reverse("console:token_create"), {}).status_code == 403


def test_an_admin_creates_a_token_that_is_shown_once(client, ada_admin, sam_support):
    client.force_login(ada_admin)
    response = client.post(
        reverse("console:token_create"),
        {"user": "sam-support", "name": "on-call scripts", "expires_days": "30"},
    )
    assert response.status_code == 200
    raw = response.context["created"]
    assert raw.startswith("fgp_") and raw.encode() in response.content
    assert response["Cache-Control"] == "no-store"
    token = BearerToken.objects.get()
    assert token.token_hash == hash_token(raw) and token.user == sam_support
    assert raw.encode() not in client.get(reverse("console:tokens")).content
    event = AuditEvent.objects.get(action="api_token.create")
    assert raw not in str(event.params)


def test_scopes_beyond_the_role_and_bad_input_are_refused(client, ada_admin, vera_viewer):
    client.force_login(ada_admin)
    response = client.post(
        reverse("console:token_create"),
        {"user": "vera-viewer", "name": "x", "expires_days": "30", "scopes": ["retry_all_jobs"]},
    )
    assert response.status_code == 400
    assert b"cannot carry more than" in response.content
    response = client.post(
        reverse("console:token_create"), {"user": "nobody", "name": "", "expires_days": "9999"}
    )
    assert response.status_code == 400
    assert not BearerToken.objects.exists()


def test_revoke(client, ada_admin):
    client.force_login(ada_admin)
    client.post(
        reverse("console:token_create"), {"user": "ada-admin", "name": "x", "expires_days": "1"}
    )
    token = BearerToken.objects.get()
    response = client.post(reverse("console:token_revoke", args=[token.pk]), follow=True)
    assert b"is revoked" in response.content
    token.refresh_from_db()
    assert token.revoked_at is not None
