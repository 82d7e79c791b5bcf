from urllib.parse import urlsplit

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from portal.access import mfa
from portal.access.actors import Actor
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_first_sign_in_sets_up_an_authenticator(
    page, live_server, personas, sign_in, screenshot, settings, browser_problems
):
    settings.REQUIRE_MFA = True
    # Without a set-up link the second step refuses (403) and says whom to ask: on purpose.
    browser_problems.allow(403, r"/login/second-step/")
    link = urlsplit(mfa.enrol_link(Actor.system("tests"), personas["support"])).path
    sign_in(PERSONAS["support"])
    expect(page.get_by_role("heading", name="Set up your authenticator")).to_be_visible()
    expect(page.get_by_text("Ask an administrator for a set-up link")).to_be_visible()
    page.goto(live_server.url + link)
    expect(page.get_by_role("img", name="QR code to add Fleet Graph Portal")).to_be_visible()
    screenshot("mfa-enrol")
    device = TOTPDevice.objects.get(user=personas["support"], confirmed=False)
    code = totp(device.bin_key, device.step, device.t0, device.digits, device.drift)
    page.get_by_label("Code").fill(f"{code:06d}")
    page.get_by_role("button", name="Finish set-up").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
