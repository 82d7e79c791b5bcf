"""Connect a tenant page (portal/console/tenant_views.py): admin only, preview, apply."""

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile

from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft import certificates, tenant
from integrations.microsoft.models import Credential
from portal.access.actors import Actor
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


URL = "/credentials/connect-tenant"


@pytest.fixture(scope="module")
def other_tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    with RunningEmulator(
        state_dir=tmp_path_factory.mktemp("other-tenant"), extra_args=["--seed", "7"]
    ) as emu:
        yield emu


def form_for(emu: RunningEmulator, secret: str | None = None) -> dict[str, str]:
    return {
        "tenant_id": emu.tenant_id,
        "client_id": emu.client_id,
        "client_secret": secret or emu.client_secret,
        "authority_host": emu.authority_host,
        "graph_url": emu.graph_url,
        "ca_bundle": emu.ca_path,
    }


@pytest.mark.parametrize("persona", ["vera_viewer", "sam_support", "otto_operator"])
def test_only_admins_may_use_it(client, request, persona):
    client.force_login(request.getfixturevalue(persona))
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"tenant_id": "x"}).status_code == 403
    assert client.post(URL + "/apply").status_code == 403


def test_the_credentials_page_links_to_it(client, ada_admin):
    client.force_login(ada_admin)
    assert URL.encode() in client.get("/credentials/").content


def test_it_takes_its_own_permission_not_the_rotation_one(client, ada_admin, other_tenant):
    # A deployment may let admins rotate secrets without letting them switch tenants.
    Group.objects.get(name="admin").permissions.remove(
        Permission.objects.get(codename="connect_tenant", content_type__app_label="access")
    )
    client.force_login(ada_admin)
    assert client.get(URL).status_code == 403
    assert client.post(URL, form_for(other_tenant)).status_code == 403
    assert client.post(URL + "/apply").status_code == 403
    denied = AuditEvent.objects.filter(outcome="denied").latest("pk")
    assert "requires connect_tenant" in denied.reason
    page = client.get("/credentials/")
    assert page.status_code == 200 and URL.encode() not in page.content
    # The service (what manage.py connect_tenant and the page call) asks the same of a person.
    actor = Actor(kind="user", name=ada_admin.username, role="admin", user=ada_admin)
    target = tenant.clean_target(
        tenant_id=other_tenant.tenant_id,
        client_id=other_tenant.client_id,
        authority_host=other_tenant.authority_host,
        graph_url=other_tenant.graph_url,
        ca_bundle=other_tenant.ca_path,
    )
    with pytest.raises(PermissionDenied):
        tenant.prepare(actor, target, other_tenant.client_secret)


def test_bad_input_is_a_form_error(client, ada_admin):
    client.force_login(ada_admin)
    response = client.post(
        URL,
        {
            "tenant_id": "x y",
            "client_id": "c",
            "client_secret": "s",
            "authority_host": "http://nope",
        },
    )
    assert response.status_code == 400
    assert b"must be an https URL" in response.content


@pytest.mark.django_db(transaction=True)
def test_preview_then_apply_switches_tenant_and_never_shows_the_secret(
    client, ada_admin, graph_settings, emulator, other_tenant, q_sync, tmp_path
):
    other_tenant.reset()
    graph_settings.DOTENV_FILE = None
    client.force_login(ada_admin)
    wrong = client.post(URL, form_for(other_tenant, "wrong-secret"))
    assert wrong.status_code == 400 and b"nothing was changed" in wrong.content
    preview = client.post(URL, form_for(other_tenant))
    body = preview.content.decode()
    assert preview.status_code == 200 and "What will change" in body
    assert other_tenant.client_secret not in body
    assert other_tenant.client_secret not in str(dict(client.session))
    # Connecting is typed to confirm: a bare click changes nothing and shows the preview again.
    unconfirmed = client.post(URL + "/apply")
    assert unconfirmed.status_code == 400
    assert b"Type &quot;connect&quot; to confirm." in unconfirmed.content
    assert b"What will change" in unconfirmed.content
    assert not AuditEvent.objects.filter(action="tenant.connect").exists()
    done = client.post(URL + "/apply", {"confirm": "connect"})
    body = done.content.decode()
    assert f"Connected to tenant {other_tenant.tenant_id}" in body
    assert other_tenant.client_secret not in body
    assert f"MICROSOFT_TENANT_ID={other_tenant.tenant_id}" in body
    active = Credential.objects.get(state="active")
    assert active.tenant_id == other_tenant.tenant_id
    event = AuditEvent.objects.get(action="tenant.connect")
    assert event.actor_name == "ada-admin"
    # The preview is used up: a second apply is refused.
    again = client.post(URL + "/apply", {"confirm": "connect"}, follow=True)
    assert b"The preview has expired" in again.content


@pytest.mark.django_db(transaction=True)
def test_connect_with_a_certificate_file(
    client, ada_admin, graph_settings, emulator, other_tenant, q_sync
):
    other_tenant.reset()
    graph_settings.DOTENV_FILE = None
    key_pem, cert_pem = certificates.generate("tenant-b", days=30)
    other_tenant.control.add_certificate(other_tenant.client_id, cert_pem)
    client.force_login(ada_admin)
    form = {**form_for(other_tenant), "client_secret": ""}
    both = client.post(URL, {**form_for(other_tenant), "certificate_file": _file(cert_pem)})
    assert both.status_code == 400 and b"either the client secret or a certificate" in both.content
    no_key = client.post(URL, {**form, "certificate_file": _file(cert_pem)})
    assert no_key.status_code == 400 and b"not its private key" in no_key.content
    preview = client.post(URL, {**form, "certificate_file": _file(key_pem + cert_pem)})
    body = preview.content.decode()
    assert preview.status_code == 200 and "the certificate CN=tenant-b" in body
    assert "PRIVATE KEY" not in body and "PRIVATE KEY" not in str(dict(client.session))
    done = client.post(URL + "/apply", {"confirm": "connect"})
    assert f"Connected to tenant {other_tenant.tenant_id}" in done.content.decode()
    active = Credential.objects.get(state="active")
    assert (active.kind, active.tenant_id) == ("certificate", other_tenant.tenant_id)


def _file(text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile("portal.pem", text.encode(), content_type="application/x-pem-file")
