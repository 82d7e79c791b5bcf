"""Rules every console template keeps (the browser tests see the effects; these name the cause)."""

import re
from pathlib import Path

from django.conf import settings

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
