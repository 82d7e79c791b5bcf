"""Rules every console template keeps (the browser tests see the effects; these name the cause)."""

import re
from pathlib import Path

from django.conf import settings
from django.urls import get_resolver

TEMPLATES = sorted((Path(settings.BASE_DIR) / "templates").rglob("*.html"))


def test_no_htmx_attribute_needs_eval_which_the_csp_forbids():
    # `every 15s [cond]` filters, hx-on and hx-vars are evaluated with eval / new Function.
    needs_eval = re.compile(r'hx-trigger="[^"]*\[|hx-on[:-]|hx-vars=|js:')
    offenders = [str(p) for p in TEMPLATES if needs_eval.search(p.read_text())]
    assert offenders == []


def test_live_refresh_uses_the_poll_script(client, vera_viewer):
    client.force_login(vera_viewer)
    body = client.get("/").content.decode()
    assert 'data-poll-seconds="15" hx-trigger="poll"' in body
    assert "/static/portal/poll.js" in body
    assert '"allowEval": false' in body


def test_no_template_tests_a_state_by_substring():
    # `status in "dead retrying cancelled"` is a substring test ("" and "dead retry" match too).
    substring_test = re.compile(r"""\{%[^%]* in ["'][^%]*%\}""")
    offenders = [str(p) for p in TEMPLATES if substring_test.search(p.read_text())]
    assert offenders == []


def _console_pages_without_arguments():
    resolver = get_resolver()
    for pattern in resolver.url_patterns:
        if getattr(pattern, "namespace", None) != "console":
            continue
        for inner in pattern.url_patterns:
            if not inner.pattern.converters:
                yield "/" + str(pattern.pattern) + str(inner.pattern)


def test_every_console_html_answer_varies_on_hx_request(client, ada_admin):
    # Walks every console URL without arguments, as htmx and as a navigation: the two answers
    # differ (fragment vs page), so each must say Vary: HX-Request.
    client.force_login(ada_admin)
    walked = []
    for url in _console_pages_without_arguments():
        for headers in ({"HX-Request": "true"}, {}):
            response = client.get(url, headers=headers)
            if response.get("Content-Type", "").startswith("text/html"):
                walked.append(url)
                assert "HX-Request" in response.get("Vary", ""), url
    assert {"/", "/jobs/", "/audit/", "/graph/", "/subscriptions/", "/sync/"} <= set(walked)


def test_a_fragment_is_only_for_htmx_and_history_restores_ask_for_the_page(client, ada_admin):
    client.force_login(ada_admin)
    fragment = client.get("/audit/", headers={"HX-Request": "true"}).content.decode()
    page = client.get("/audit/").content.decode()
    assert "<html" not in fragment and "<html" in page
    assert '"historyRestoreAsHxRequest": false' in page


def test_django_htmx_error_display_only_in_debug(client, vera_viewer, settings):
    client.force_login(vera_viewer)
    assert "django_htmx/django-htmx.js" not in client.get("/").content.decode()
    settings.DEBUG = True
    assert "django_htmx/django-htmx.js" in client.get("/").content.decode()
