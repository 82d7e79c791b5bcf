"""Every URL declares what it needs; a view that declares nothing is refused."""

import pytest
from django.http import HttpResponse
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver, include, path

from portal.access.middleware import view_permission
from portal.access.roles import PERMISSIONS


def walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def test_every_url_pattern_declares_a_permission():
    undeclared = []
    seen = 0
    for route, callback in walk(get_resolver().url_patterns):
        seen += 1
        declared = view_permission(callback)
        if declared is None:
            undeclared.append(route)
        else:
            assert declared == "public" or declared in PERMISSIONS, (route, declared)
    assert seen > 10
    assert undeclared == []


def bare_view(request):
    return HttpResponse("should never be served")


urlpatterns = [path("bare/", bare_view), path("", include("portal.urls"))]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_a_view_that_declares_nothing_is_refused_even_for_admins(client, ada_admin):
    client.force_login(ada_admin)
    response = client.get("/bare/")
    assert response.status_code == 403
    assert b"should never be served" not in response.content
