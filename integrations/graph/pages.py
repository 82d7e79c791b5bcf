"""Paging: the pages of a collection or a delta round, following `@odata.nextLink`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from integrations.graph.request import TokenKind, request


class Pages:
    """Iterate the pages of a collection or delta round, following `@odata.nextLink`.

    After the iteration, `delta_link` holds the round's `@odata.deltaLink` (None for plain
    collections) and `next_link` the last link followed. Query options go on the first call
    only; links are followed verbatim ("Use delta query to track changes in Microsoft Graph data").
    """

    def __init__(
        self,
        path_or_url: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        mailbox: str | None = None,
        token_kind: TokenKind = "app",
        max_pages: int | None = None,
    ) -> None:
        self.start = path_or_url
        self.params = params
        self.headers = headers
        self.mailbox = mailbox
        self.token_kind = token_kind
        self.max_pages = max_pages
        self.delta_link: str | None = None
        self.next_link: str | None = None
        self.pages = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        url: str | None = self.start
        params = self.params
        while url:
            page = (
                request(
                    "GET",
                    url,
                    params=params,
                    headers=self.headers,
                    mailbox=self.mailbox,
                    token_kind=self.token_kind,
                ).body
                or {}
            )
            params = None
            self.pages += 1
            yield page
            self.delta_link = page.get("@odata.deltaLink") or self.delta_link
            url = page.get("@odata.nextLink")
            if url:
                self.next_link = url
            if self.max_pages is not None and self.pages >= self.max_pages:
                return

    def items(self) -> Iterator[dict[str, Any]]:
        for page in self:
            yield from page.get("value", [])


def iter_pages(path_or_url: str, **kwargs: Any) -> Pages:
    """`for page in (pages := iter_pages(url)): ...` then `pages.delta_link`."""
    return Pages(path_or_url, **kwargs)
