"""One search box for the whole console: by id or text, find a job, a message, a monitored user,
a subscription, a Graph request, an event endpoint or the audit trail of an object.

Every lookup is an exact match on an indexed column or a prefix/contains match on a small
table (monitored users, event endpoints), so a search stays fast with millions of jobs, audit
events and Graph calls (bench/console_scale). Each kind is searched only for people whose role
may open its page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Q
from django.urls import reverse

from integrations.microsoft.models import GraphCall, MonitoredUser, OutboundMessage, Subscription
from portal.audit.models import AuditEvent
from portal.console import audit_targets
from portal.events.models import EventEndpoint
from portal.jobs.models import Job
from portal.jobs.registry import job_type_label

# Enough to recognise what was meant; a search is not a list page.
LIMIT_PER_KIND = 10
MAX_QUERY_LENGTH = 320


@dataclass(frozen=True)
class Hit:
    kind: str  # what it is, in words: "Job", "Message", …
    title: str
    detail: str
    url: str


def search(user: Any, query: str) -> list[Hit]:
    """What `query` names, among the things `user` may see (most specific kinds first)."""
    query = query.strip()[:MAX_QUERY_LENGTH]
    if not query:
        return []
    hits: list[Hit] = []
    for permission, finder in _FINDERS:
        if user.has_perm(f"access.{permission}"):
            hits.extend(finder(query))
    return hits


def _as_id(query: str) -> int | None:
    text = query.removeprefix("#")
    return int(text) if text.isdigit() and len(text) < 18 else None


def _jobs(query: str) -> list[Hit]:
    condition = Q(idempotency_key=query) | Q(correlation_id=query)
    pk = _as_id(query)
    if pk is not None:
        condition |= Q(pk=pk)
    return [
        Hit(
            "Job",
            f"Job {job.pk} · {job_type_label(job.job_type)}",
            f"{job.get_status_display()}, created {job.created_at:%Y-%m-%d %H:%M} UTC"
            f" · {job.job_type}",
            reverse("console:job_detail", args=[job.pk]),
        )
        for job in Job.objects.filter(condition).order_by("-id")[:LIMIT_PER_KIND]
    ]


def _messages(query: str) -> list[Hit]:
    condition = (
        Q(pk__in=OutboundMessage.objects.with_key(query))
        | Q(internet_message_id=query)
        | Q(internet_message_id=f"<{query.strip('<>')}>")
        | Q(graph_message_id=query)
    )
    pk = _as_id(query)
    if pk is not None:
        condition |= Q(pk=pk)
    if "@" in query:
        # Recipients are kept as a JSON list: contains on its text, as the Messages filter does.
        condition |= (
            Q(to_recipients__icontains=query) | Q(to_user__iexact=query) | Q(sender__iexact=query)
        )
    return [
        Hit(
            "Message",
            f"Message {message.pk} · {message.get_channel_display()}",
            f"{message.get_status_display()} · to {_recipients(message)}",
            reverse("console:message", args=[message.pk]),
        )
        for message in OutboundMessage.objects.filter(condition).order_by("-id")[:LIMIT_PER_KIND]
    ]


def _recipients(message: OutboundMessage) -> str:
    return (
        ", ".join(map(str, message.to_recipients))
        or message.to_user
        or message.chat_id
        or message.channel_id
        or "—"
    )


def _monitored_users(query: str) -> list[Hit]:
    condition = (
        Q(upn__istartswith=query)
        | Q(identifier__istartswith=query)
        | Q(display_name__icontains=query)
        | Q(graph_id__iexact=query)
    )
    return [
        Hit(
            "Monitored user",
            user.upn or user.identifier,
            user.display_name or ("monitoring stopped" if not user.is_active else ""),
            reverse("console:sync_user", args=[user.pk]),
        )
        for user in MonitoredUser.objects.filter(condition).order_by("upn")[:LIMIT_PER_KIND]
    ]


def _subscriptions(query: str) -> list[Hit]:
    condition = Q(graph_id=query)
    pk = _as_id(query)
    if pk is not None:
        condition |= Q(pk=pk)
    found = Subscription.objects.filter(condition).select_related("monitored_user")
    return [
        Hit(
            "Subscription",
            f"Subscription {sub.pk} · "
            + (sub.monitored_user.upn if sub.monitored_user else "(no user)")
            + f" · {audit_targets.KIND_WORDS.get(sub.kind, sub.kind)}",
            f"{sub.get_state_display()} · {sub.resource}",
            reverse("console:subscriptions") + "?" + urlencode({"id": sub.pk}),
        )
        for sub in found.order_by("-id")[:LIMIT_PER_KIND]
    ]


def _graph_requests(query: str) -> list[Hit]:
    if len(query) < 8:
        return []
    calls = GraphCall.objects.filter(request_id=query).order_by("-created_at")[:LIMIT_PER_KIND]
    return [
        Hit(
            "Graph request",
            f"{call.method} {call.route} → {call.status or 'no response'}",
            f"request-id {call.request_id}, {call.created_at:%Y-%m-%d %H:%M:%S} UTC",
            reverse("console:graph_calls") + "?" + urlencode({"request_id": call.request_id}),
        )
        for call in calls
    ]


def _event_endpoints(query: str) -> list[Hit]:
    condition = Q(url__icontains=query) | Q(description__icontains=query)
    pk = _as_id(query)
    if pk is not None:
        condition |= Q(pk=pk)
    return [
        Hit(
            "Event endpoint",
            endpoint.url,
            endpoint.description or endpoint.get_state_display(),
            reverse("console:event_endpoint", args=[endpoint.pk]),
        )
        for endpoint in EventEndpoint.objects.filter(condition).order_by("-id")[:LIMIT_PER_KIND]
    ]


def _audit_targets(query: str) -> list[Hit]:
    targets = (
        AuditEvent.objects.filter(target_id=query)
        .values("target_type")
        .annotate(events=Count("id"))
        .order_by("target_type")[:LIMIT_PER_KIND]
    )
    return [
        Hit(
            "Audit trail",
            audit_targets.label_of(row["target_type"], query),
            f"{row['events']} audited action{'s' if row['events'] != 1 else ''}",
            reverse("console:audit")
            + "?"
            + urlencode({"target_type": row["target_type"], "target_id": query}),
        )
        for row in targets
    ]


_FINDERS = (
    ("view_console", _jobs),
    ("view_messages", _messages),
    ("view_console", _monitored_users),
    ("view_console", _subscriptions),
    ("view_console", _graph_requests),
    ("manage_event_endpoints", _event_endpoints),
    ("view_audit", _audit_targets),
)
