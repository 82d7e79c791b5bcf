"""Connect a tenant in a real browser: an admin moves the demo portal to another tenant (a
second emulator) — a wrong secret changes nothing, the preview lists the changes, applying
switches the credential and runs the checklist; the secret is never shown back; people
without connect_tenant are refused. Screenshots under test-artifacts/screenshots/."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from integrations.graph import auth
from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft.models import Credential
from portal.audit.models import AuditEvent
from tests.browser.conftest import open_nav_item
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def other_tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    with RunningEmulator(
        state_dir=tmp_path_factory.mktemp("other-tenant"), extra_args=["--seed", "7"]
    ) as emu:
        yield emu


def fill(page, emu: RunningEmulator, secret: str) -> None:
    page.get_by_label("Directory (tenant) ID").fill(emu.tenant_id)
    page.get_by_label("Application (client) ID").fill(emu.client_id)
    page.get_by_label("Client secret (its value, not its ID)").fill(secret)
    page.get_by_label("Identity platform").fill(emu.authority_host)
    page.get_by_label("Graph URL").fill(emu.graph_url)
    page.get_by_label("CA bundle path (blank: the system's)").fill(emu.ca_path)


def test_admin_connects_the_portal_to_another_tenant(
    page,
    live_server,
    personas,
    sign_in,
    screenshot,
    browser_problems,
    graph_settings,
    emulator,
    other_tenant,
    q_sync,
):
    other_tenant.reset()
    graph_settings.DOTENV_FILE = None  # settings come from the environment: printed
    graph_settings.PUBLIC_BASE_URL = live_server.url  # the checklist probes our receiver
    auth.app_token()  # the demo's secret is the active credential
    sign_in(PERSONAS["admin"])
    open_nav_item(page, "Credentials")
    page.get_by_role("link", name="Connect a tenant").click()
    expect(page.get_by_role("heading", name="Connect a tenant", exact=True)).to_be_visible()
    screenshot("connect-tenant-form")

    # A wrong secret: Entra refuses the token, nothing changes, the secret is not echoed.
    browser_problems.allow(400, r"/credentials/connect-tenant$")
    fill(page, other_tenant, "not-the-secret-value")
    page.get_by_role("button", name="Request a token and preview the changes").click()
    expect(page.get_by_role("alert")).to_contain_text("nothing was changed")
    expect(page.get_by_label("Client secret (its value, not its ID)")).to_have_value("")
    assert "not-the-secret-value" not in page.content()
    screenshot("connect-tenant-refused")
    assert Credential.objects.get(state="active").tenant_id == emulator.tenant_id

    fill(page, other_tenant, other_tenant.client_secret)
    page.get_by_role("button", name="Request a token and preview the changes").click()
    expect(page.get_by_role("heading", name="What will change")).to_be_visible()
    expect(page.locator("#connect-preview li").first).to_be_visible()
    assert other_tenant.client_secret not in page.content()
    screenshot("connect-tenant-preview")

    page.get_by_label("Type connect to confirm").fill("connect")
    page.get_by_role("button", name=f"Connect to {other_tenant.tenant_id}").click()
    expect(
        page.get_by_role("heading", name=f"Connected to tenant {other_tenant.tenant_id}")
    ).to_be_visible()
    checklist = page.locator("ul.checklist li")
    expect(checklist.first).to_be_visible()
    assert checklist.count() > 8 and page.locator("ul.checklist li.bad").count() == 0
    expect(page.locator("pre")).to_contain_text(f"MICROSOFT_TENANT_ID={other_tenant.tenant_id}")
    assert other_tenant.client_secret not in page.content()
    screenshot("connect-tenant-done")

    active = Credential.objects.get(state="active")
    assert (active.tenant_id, active.client_id) == (other_tenant.tenant_id, other_tenant.client_id)
    assert AuditEvent.objects.filter(action="tenant.connect", actor_name=PERSONAS["admin"]).exists()


def test_without_connect_tenant_there_is_no_link_and_the_page_is_refused(
    page, live_server, personas, sign_in, browser_problems
):
    sign_in(PERSONAS["operator"])
    browser_problems.allow(403, r"/credentials/connect-tenant$")
    answer = page.goto(live_server.url + "/credentials/connect-tenant")
    assert answer.status == 403
    expect(page.locator("body")).to_contain_text("may not connect the portal to another tenant")
    assert not page.get_by_role("link", name="Connect a tenant").count()
