"""The resource kinds one can subscribe to and delta-sync, and Graph's date-time format.

The kind names are defined here (the integration's ResourceKind choices take their values from
them); the table is shared by the integration's subscriptions, sync and notifications (and the
console), so none of them imports another for a table or a parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# The kind names (stored in the integration's rows: do not change a value).
MESSAGES = "messages"
CHAT_MESSAGES = "chatMessages"


@dataclass(frozen=True)
class KindSpec:
    """What we subscribe to for one resource kind, and for how long."""

    kind: str
    endpoint: str  # the receiver: /api/webhooks/<endpoint>
    # With {id} = the Graph user id (ids, not UPNs: notifications name users by id).
    resource: str
    change_types: str
    # Lifetime we ask for. Graph's maxima ("subscription resource type", maximum length of
    # subscription per resource type): Outlook messages 10,080 min, but live Graph
    # rejects > 10,070, so 10,000; Teams chatMessage 4,320 min — we stay a little below so
    # clock skew between us and Graph cannot push a request over the limit.
    lifetime_minutes: int
    delta_path: str
    # How far back a full delta round reaches ("chatMessage: delta": delta only returns
    # messages within the last eight months); older items are not missing from it, so a full
    # round must not take them for deleted. None: the whole folder.
    delta_window: timedelta | None = None
    # The page size goes as $top where Graph documents it instead of honouring
    # Prefer: odata.maxpagesize (getAllMessages/delta: $top, at most 50).
    max_top: int | None = None


KINDS: dict[str, KindSpec] = {
    MESSAGES: KindSpec(
        MESSAGES,
        "mail",
        "users/{id}/mailFolders('inbox')/messages",
        "created,updated,deleted",
        10_000,
        "/users/{id}/mailFolders/inbox/messages/delta",
    ),
    CHAT_MESSAGES: KindSpec(
        CHAT_MESSAGES,
        "teams",
        "users/{id}/chats/getAllMessages",
        "created,updated,deleted",
        4_200,
        "/users/{id}/chats/getAllMessages/delta",
        # Eight months are 242-245 days; a shorter window never sweeps what Graph still
        # returns, at worst it keeps a deletion of a message on the edge unnoticed.
        delta_window=timedelta(days=235),
        max_top=50,
    ),
}


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_graph_datetime(value: str | None) -> datetime | None:
    """Graph sends 7 fractional digits and a Z (`2026-03-19T22:11:09.9523456Z`)."""
    if not value:
        return None
    text = _FRACTION.sub(r"\1", str(value).strip()).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
