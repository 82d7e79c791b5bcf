"""Graph URLs: the version root, absolute links we may follow, and what a path names.

`route_template` gives the low-cardinality route of a call (for the call log and metrics: no
ids, no PII); `mailbox_of` the mailbox a `/users/{id}/...` path belongs to (for throttling).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.conf import settings

# Collections whose next segment is an id (or a well-known name such as `inbox`).
_COLLECTIONS = {
    "users",
    "messages",
    "mailfolders",
    "childfolders",
    "chats",
    "teams",
    "channels",
    "subscriptions",
    "replies",
    "events",
    "applications",
    "attachments",
    "contacts",
    "groups",
    "members",
    "serviceprincipals",
    "calendars",
    "drives",
    "items",
    "sites",
    "lists",
    "installedapps",
    "tabs",
    "hostedcontents",
    "tags",
    "onlinemeetings",
}
# Functions/actions that follow a collection but are not ids.
_NOT_IDS = {
    "delta",
    "getallmessages",
    "getallretainedmessages",
    "sendmail",
    "send",
    "reply",
    "replyall",
    "forward",
    "move",
    "copy",
    "reauthorize",
    "$count",
    "$ref",
    "$value",
    "addpassword",
    "removepassword",
    "createreply",
    "createreplyall",
    "createforward",
    "getbyids",
    "$batch",
    "microsoft.graph.delta()",
    "delta()",
}
_KEY_SEGMENT = re.compile(r"^([A-Za-z]+)\((.+)\)$")  # users('id') / messages(id)


def graph_base() -> str:
    return settings.MICROSOFT_GRAPH_URL.rstrip("/")


def _relative_path(path_or_url: str) -> str:
    """The path below the Graph version root, without the query string."""
    parts = urlsplit(path_or_url)
    path = parts.path
    if parts.scheme:
        base_path = urlsplit(graph_base()).path.rstrip("/")
        if base_path and path.startswith(base_path):
            path = path[len(base_path) :]
        else:
            # An absolute link without our version prefix (e.g. another version): drop it.
            path = re.sub(r"^/(v1\.0|beta)(?=/)", "", path)
    return path or "/"


def route_template(path_or_url: str) -> str:
    """`/users/ab12/mailFolders/inbox/messages/delta?$skiptoken=..` →
    `/users/{id}/mailFolders/{id}/messages/delta`. Low-cardinality for metrics, no PII."""
    segments = [s for s in _relative_path(path_or_url).split("/") if s]
    out: list[str] = []
    previous = ""
    for segment in segments:
        keyed = _KEY_SEGMENT.match(segment)
        lower = segment.lower()
        if keyed:
            out.append(f"{keyed.group(1)}({{id}})")
            previous = keyed.group(1).lower()
            continue
        if previous in _COLLECTIONS and lower not in _NOT_IDS and lower not in _COLLECTIONS:
            out.append("{id}")
            previous = ""
            continue
        out.append(segment)
        previous = lower
    return ("/" + "/".join(out))[:300]


def mailbox_of(path_or_url: str) -> str:
    """The mailbox key (user id or UPN, lower-cased) from a `/users/{id}/...` path, or ""."""
    segments = [s for s in _relative_path(path_or_url).split("/") if s]
    if len(segments) >= 2 and segments[0].lower() == "users":
        return segments[1].strip("'").lower()
    if segments:
        keyed = _KEY_SEGMENT.match(segments[0])
        if keyed and keyed.group(1).lower() == "users":
            return keyed.group(2).strip("'").lower()
    return ""


def absolute_url(path_or_url: str) -> str:
    base = graph_base()
    if "://" not in path_or_url:
        return base + "/" + path_or_url.lstrip("/")
    # Never send our bearer token to a host that is not the configured Graph host: nextLink
    # and deltaLink URLs come from responses and are followed verbatim.
    got, want = urlsplit(path_or_url), urlsplit(base)
    if (got.scheme, got.netloc.lower()) != (want.scheme, want.netloc.lower()):
        raise ValueError(
            f"Refusing to call {got.scheme}://{got.netloc}: not the Graph host "
            f"{want.scheme}://{want.netloc} (MICROSOFT_GRAPH_URL)."
        )
    return path_or_url
