"""The search box on every page (base.html): one hit opens its page, several are listed."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from portal.access.decorators import requires
from portal.console.search import MAX_QUERY_LENGTH, search


@require_GET
@requires("view_console")
def search_page(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    hits = search(request.user, query)
    if len(hits) == 1 and request.GET.get("list") != "1":
        return redirect(hits[0].url)
    return render(
        request,
        "console/search.html",
        {
            "query": query[:MAX_QUERY_LENGTH],
            "hits": hits,
            "too_long": len(query) > MAX_QUERY_LENGTH,
        },
    )
