"""Keyset pagination for the console's lists (newest first, `?before=<id>` for older rows).

No OFFSET and no COUNT(*): a page costs the same on the millionth row as on the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import HttpRequest, QueryDict


def query_without(params: QueryDict, *keys: str) -> str:
    """The query string without the given keys (always without the page cursor)."""
    query = params.copy()
    for key in ("before", *keys):
        query.pop(key, None)
    return query.urlencode()


@dataclass(frozen=True)
class KeysetPage:
    rows: list[Any]
    older_cursor: int | None
    is_first_page: bool
    filters: str

    @property
    def newest_query(self) -> str:
        """The query string of the first (newest) page with the same filters."""
        return self.filters

    @property
    def older_query(self) -> str:
        """The query string of the next older page, or "" when this is the last page."""
        if self.older_cursor is None:
            return ""
        cursor = urlencode({"before": self.older_cursor})
        return f"{self.filters}&{cursor}" if self.filters else cursor

    def context(self) -> dict[str, Any]:
        """What templates/console/includes/pager.html needs (as `pager`), and the figures."""
        return {
            "pager": self,
            "older_cursor": self.older_cursor,
            "is_first_page": self.is_first_page,
            "filters": self.filters,
        }


def keyset_page(
    request: HttpRequest, queryset: QuerySet, before: int | None, size: int = 50
) -> KeysetPage:
    if before:
        queryset = queryset.filter(pk__lt=before)
    # One row more than a page tells whether there is an older page.
    rows = list(queryset.order_by("-pk")[: size + 1])
    older = rows[size - 1].pk if len(rows) > size else None
    return KeysetPage(rows[:size], older, not request.GET.get("before"), query_without(request.GET))


def empty_page(request: HttpRequest) -> KeysetPage:
    return KeysetPage([], None, not request.GET.get("before"), query_without(request.GET))
