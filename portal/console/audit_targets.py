"""Audit targets in words, linked to their page: "lena.ortiz@… · mail", "Job 5 · Delta sync",
the endpoint's URL — not `sync_state:3` or `monitored_user:5`.

One query per kind of target on the page (a page holds at most a few dozen events).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.urls import reverse

from integrations.microsoft.models import MonitoredUser, OutboundMessage, Subscription, SyncState
from portal.alerts.rules import RULES
from portal.events.models import EventEndpoint
from portal.jobs.models import Job
from portal.jobs.registry import job_type_label
from portal.runtime.registry import SPECS

# The short names of the synced resources, as in "user · mail".
KIND_WORDS = {"messages": "mail", "chatMessages": "Teams chats"}

Target = tuple[str, str]  # (label, url: "" when it has no page)


def describe(events: Iterable[Any], viewer: Any) -> None:
    """Set `target_label` and `target_url` on each audit event (no link to a page `viewer`
    may not open)."""
    events = list(events)
    by_type: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if event.target_type and event.target_id:
            by_type[event.target_type].add(event.target_id)
    known: dict[tuple[str, str], Target] = {}
    for target_type, ids in by_type.items():
        resolver, permission = _RESOLVERS.get(target_type, (None, ""))
        if resolver is not None:
            linked = viewer.has_perm(f"access.{permission}")
            for target_id, (label, url) in resolver(ids).items():
                known[(target_type, target_id)] = (label, url if linked else "")
    for event in events:
        label, url = known.get((event.target_type, event.target_id), (_fallback(event), ""))
        event.target_label, event.target_url = label, url


def _fallback(event: Any) -> str:
    words = event.target_type.replace("_", " ")
    if not event.target_id:
        return f"{words} (none named)" if words else ""
    return f"{words} {event.target_id}"


def _ints(ids: set[str]) -> dict[int, str]:
    return {int(i): i for i in ids if i.isdigit()}


def _jobs(ids: set[str]) -> dict[str, Target]:
    wanted = _ints(ids)
    return {
        wanted[pk]: (
            f"Job {pk} · {job_type_label(job_type)}",
            reverse("console:job_detail", args=[pk]),
        )
        for pk, job_type in Job.objects.filter(pk__in=wanted).values_list("pk", "job_type")
    }


def _messages(ids: set[str]) -> dict[str, Target]:
    wanted = _ints(ids)
    found = OutboundMessage.objects.filter(pk__in=wanted).values_list("pk", "channel")
    return {
        wanted[pk]: (
            f"Message {pk} · {OutboundMessage.Channel(channel).label}",
            reverse("console:message", args=[pk]),
        )
        for pk, channel in found
    }


def _monitored_users(ids: set[str]) -> dict[str, Target]:
    wanted = _ints(ids)
    result: dict[str, Target] = {}
    for pk, upn, identifier in MonitoredUser.objects.filter(pk__in=wanted).values_list(
        "pk", "upn", "identifier"
    ):
        result[wanted[pk]] = (upn or identifier, reverse("console:sync_user", args=[pk]))
    return result


def _sync_states(ids: set[str]) -> dict[str, Target]:
    # Either "<monitored user id>:<kind>" or the state's own id.
    pairs = {i: i.split(":", 1) for i in ids if ":" in i}
    state_ids = _ints(ids)
    states = SyncState.objects.filter(pk__in=state_ids).values_list(
        "pk", "monitored_user_id", "kind"
    )
    for pk, user_pk, state_kind in states:
        pairs[state_ids[pk]] = [str(user_pk), state_kind]
    users = _monitored_users({owner for owner, _resource in pairs.values()})
    result: dict[str, Target] = {}
    for target_id, (owner, resource) in pairs.items():
        if owner in users:
            upn, url = users[owner]
            result[target_id] = (f"{upn} · {KIND_WORDS.get(resource, resource)}", url)
    return result


def _subscriptions(ids: set[str]) -> dict[str, Target]:
    wanted = _ints(ids)
    found = Subscription.objects.filter(pk__in=wanted).select_related("monitored_user")
    return {
        wanted[sub.pk]: (
            f"Subscription {sub.pk} · "
            + (sub.monitored_user.upn if sub.monitored_user else "")
            + f" · {KIND_WORDS.get(sub.kind, sub.kind)}",
            reverse("console:subscriptions") + "?" + urlencode({"id": sub.pk}),
        )
        for sub in found
    }


def _endpoints(ids: set[str]) -> dict[str, Target]:
    wanted = _ints(ids)
    return {
        wanted[pk]: (url, reverse("console:event_endpoint", args=[pk]))
        for pk, url in EventEndpoint.objects.filter(pk__in=wanted).values_list("pk", "url")
    }


def _people(ids: set[str]) -> dict[str, Target]:
    wanted = _ints(ids)
    people = reverse("console:people")
    found = get_user_model().objects.filter(pk__in=wanted).values_list("pk", "username")
    result = {wanted[pk]: (f"person {username}", people) for pk, username in found}
    # Refusals name the username they were about.
    result.update({i: (f"person {i}", people) for i in ids if not i.isdigit()})
    return result


def _job_types(ids: set[str]) -> dict[str, Target]:
    return {name: (f"job type {job_type_label(name)}", reverse("console:jobs")) for name in ids}


def _inbox_drain(ids: set[str]) -> dict[str, Target]:
    where = reverse("console:jobs") + "#notification-drain"
    return {i: ("notification processing (the inbox drain)", where) for i in ids}


def _named(url_name: str, words: str) -> Callable[[set[str]], dict[str, Target]]:
    def resolve(ids: set[str]) -> dict[str, Target]:
        return {i: (f"{words} {i}", reverse(url_name)) for i in ids}

    return resolve


def _settings(ids: set[str]) -> dict[str, Target]:
    where = reverse("console:settings")
    return {
        i: (f"setting “{SPECS[i].label}”" if i in SPECS else f"setting {i}", where) for i in ids
    }


def _alerts(ids: set[str]) -> dict[str, Target]:
    titles = {rule.name: str(rule.title) for rule in RULES}
    where = reverse("console:alerts")
    return {i: (f"alert “{titles[i]}”" if i in titles else f"alert {i}", where) for i in ids}


def label_of(target_type: str, target_id: str) -> str:
    """One target's words (the search's audit-trail hits): as `describe` names it."""
    resolver, _permission = _RESOLVERS.get(target_type, (None, ""))
    found = resolver({target_id}) if resolver is not None else {}
    if target_id in found:
        return found[target_id][0]
    return f"{target_type.replace('_', ' ')} {target_id}"


def _urls(ids: set[str]) -> dict[str, Target]:
    return {
        i: (f"page {i}", i if i.startswith("/") and not i.startswith("//") else "") for i in ids
    }


# Each kind of target: how to name it, and the permission its page needs.
_RESOLVERS: dict[str, tuple[Callable[[set[str]], dict[str, Target]], str]] = {
    "job": (_jobs, "view_console"),
    "outbound_message": (_messages, "view_messages"),
    "monitored_user": (_monitored_users, "view_console"),
    "sync_state": (_sync_states, "view_console"),
    "subscription": (_subscriptions, "view_console"),
    "event_endpoint": (_endpoints, "manage_event_endpoints"),
    "user": (_people, "manage_users"),
    "job_type": (_job_types, "view_console"),
    "inbox_drain": (_inbox_drain, "view_console"),
    "service_client": (
        _named("console:service_clients", "service client"),
        "manage_service_clients",
    ),
    "setting": (_settings, "view_console"),
    "alert": (_alerts, "view_console"),
    "url": (_urls, "view_console"),
}
