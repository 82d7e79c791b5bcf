"""The one pager include: real hrefs that keep the filters, the same links for htmx."""

from pathlib import Path

from django.conf import settings
from django.template.loader import render_to_string
from django.test import RequestFactory

from portal.console.paging import KeysetPage, empty_page

TEMPLATES = Path(settings.BASE_DIR) / "templates"


def render(page: KeysetPage, **extra: str) -> str:
    return render_to_string(
        "console/includes/pager.html", {**page.context(), "target": "#rows", **extra}
    )


def test_an_older_page_link_keeps_the_filters_and_targets_the_list():
    html = render(KeysetPage([], 41, True, "status=dead&type=x"))
    assert 'href="?status=dead&amp;type=x&amp;before=41"' in html
    assert 'hx-get="?status=dead&amp;type=x&amp;before=41"' in html
    assert 'hx-target="#rows"' in html and 'hx-push-url="true"' in html
    assert "Newest" not in html  # the first page has no link to itself


def test_without_filters_the_links_have_no_stray_ampersand():
    html = render(KeysetPage([], 7, False, ""))
    assert 'href="?before=7"' in html and 'href="?"' in html


def test_the_last_page_has_no_older_link_and_labels_can_be_named():
    request = RequestFactory().get("/users/", {"q": "ann", "before": "3"})
    html = render(empty_page(request), newest_label="← First", older_label="More →")
    assert 'href="?q=ann"' in html and "← First" in html and "More" not in html


def test_every_console_list_uses_the_include_instead_of_its_own_pager():
    own_pagers = [
        path.name
        for path in (TEMPLATES / "console").glob("*.html")
        if 'class="pager"' in path.read_text()
    ]
    users = [
        path.name
        for path in (TEMPLATES / "console").glob("*.html")
        if "console/includes/pager.html" in path.read_text()
    ]
    assert own_pagers == []
    assert len(users) >= 5
