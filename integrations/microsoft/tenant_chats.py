"""The tenant-wide chat subscription's notifications, turned into the monitored users' syncs.

Past TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD monitored users, chats are watched with one
`/chats/getAllMessages` subscription (subscriptions.tenant_chats_wanted): its notifications
name a chat (`chats('{chat id}')/messages('{message id}')`), not a user. The drain looks the
chat's monitored members up in TeamsChat (one query per batch) and requests each member's
chat delta, as a per-user subscription's notification would; the notifications of a chat
without a monitored member are dropped (marked ignored). A chat not known yet, or known for
longer than CHAT_MEMBERS_REFRESH_MINUTES, gets one `graph.chat_members` job, which asks Graph
for its members ("List members of a chat") and then requests the members' deltas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models.functions import Lower
from django.utils import timezone

from integrations import graph
from integrations.microsoft import sync
from integrations.microsoft.models import MonitoredUser, ResourceKind, TeamsChat
from portal.jobs.models import Job
from portal.jobs.runner import enqueue_once_each

MEMBERS_JOB = "graph.chat_members"
_CHAT_OF_RESOURCE = re.compile(r"^chats\('([^']+)'\)/messages", re.IGNORECASE)


def chat_id_of(resource: str) -> str | None:
    """The chat a tenant-wide notification is about (None: not a chat message's)."""
    match = _CHAT_OF_RESOURCE.match(resource or "")
    return match.group(1) if match else None


def known_members(chat_ids: set[str]) -> dict[str, list[int]]:
    """{chat id: ids of its monitored members} for the chats whose members are known and
    fresh (an empty list: none of its members is monitored); the others are left out."""
    fresh = timezone.now() - timedelta(minutes=float(settings.CHAT_MEMBERS_REFRESH_MINUTES))
    rows = TeamsChat.objects.filter(chat_id__in=chat_ids, refreshed_at__gte=fresh)
    return dict(rows.values_list("chat_id", "monitored_user_ids"))


def request_members(chat_ids: Iterable[str]) -> dict[str, Job]:
    """The members job of each chat (one per chat and refresh period: later notifications of
    the same chat join it), {chat id: job}."""
    period = max(1.0, float(settings.CHAT_MEMBERS_REFRESH_MINUTES) * 60)
    slot = int(timezone.now().timestamp() // period)
    keys = {chat_id: f"{MEMBERS_JOB}:{chat_id}:{slot}"[:200] for chat_id in chat_ids}
    jobs = enqueue_once_each(
        MEMBERS_JOB,
        {key: {"chat_id": chat_id} for chat_id, key in keys.items()},
        created_by="notification",
    )
    return {chat_id: jobs[key] for chat_id, key in keys.items()}


def refresh_members(chat_id: str) -> list[int]:
    """Ask Graph for the chat's members and store which of them are monitored (watching
    chats); returns their ids."""
    graph_ids: set[str] = set()
    for page in graph.iter_pages(f"/chats/{chat_id}/members"):
        for member in page.get("value") or []:
            if member.get("userId"):
                graph_ids.add(str(member["userId"]).lower())
    monitored = sorted(
        MonitoredUser.objects.filter(is_active=True, watch_chat_messages=True)
        .annotate(gid=Lower("graph_id"))
        .filter(gid__in=graph_ids)
        .values_list("pk", flat=True)
    )
    TeamsChat.objects.update_or_create(
        chat_id=chat_id,
        defaults={"monitored_user_ids": monitored, "refreshed_at": timezone.now()},
    )
    return monitored


def sync_members(chat_id: str) -> dict[str, Any]:
    """The members job: refresh the chat's members, then sync each monitored member's chats
    (the notifications that waited for this job are theirs)."""
    members = refresh_members(chat_id)
    for user_id in members:
        sync.request_delta(
            user_id, ResourceKind.CHAT_MESSAGES, trigger="notification", created_by="notification"
        )
    return {"chat": chat_id, "monitored_members": len(members)}
