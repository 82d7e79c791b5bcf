"""Human names for machine names on screen, the machine name kept in small print."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from portal.alerts.rules import RULES
from portal.audit.actions import action_words
from portal.console.audit_targets import KIND_WORDS
from portal.events.services import event_type_label
from portal.jobs.registry import job_type_label

register = template.Library()


def _labelled(label: str, name: str) -> SafeString:
    if label == name:
        return format_html("<code>{}</code>", name)
    return format_html('{} <small class="muted machine-name">{}</small>', label, name)


@register.filter
def job_type(name: str) -> SafeString:
    """ "Delta sync <small>graph.sync_delta</small>" (the name alone when it has no label)."""
    return _labelled(job_type_label(name), name)


@register.filter
def event_type(name: str) -> SafeString:
    """ "Mail received <small>mail.received</small>"."""
    return _labelled(event_type_label(name), name)


@register.filter
def event_types(names: list[str]) -> SafeString:
    """An endpoint's event types in words ("every type" when none is chosen)."""
    if not names:
        return mark_safe("every type")
    return format_html_join(", ", "{}", ((event_type(name),) for name in names))


@register.filter
def audit_action(name: str) -> SafeString:
    """ "Retried a job <small>job.retry</small>"."""
    words = action_words(name)
    return _labelled(words[:1].upper() + words[1:], name)


@register.filter
def alert_rule(name: str) -> SafeString:
    """ "Queue too long <small>queue_length</small>"."""
    titles = {rule.name: str(rule.title) for rule in RULES}
    return _labelled(titles.get(name, name), name)


LIFECYCLE_LABELS = {
    "reauthorizationRequired": "Re-authorisation required",
    "subscriptionRemoved": "Subscription removed",
    "missed": "Notifications missed",
}


@register.filter
def lifecycle_event(name: str) -> SafeString:
    """A Graph lifecycle notification in words, Graph's name in small print."""
    return _labelled(LIFECYCLE_LABELS.get(name, name), name)


@register.filter
def resource_kind(kind: str) -> str:
    """ "mail" for messages, "Teams chats" for chatMessages."""
    return KIND_WORDS.get(kind, kind)


@register.filter
def subscription_target(subscription: Any) -> str:
    """Whose what a subscription watches, as sync states read: "lena.ortiz@… · mail",
    "whole tenant · Teams chats"."""
    if subscription.monitored_user is not None:
        owner = str(subscription.monitored_user)
    else:
        owner = "whole tenant" if subscription.tenant_wide else "(no user)"
    return f"{owner} · {resource_kind(subscription.kind)}"


def _field_name(key: object) -> str:
    """'rows_deleted' → 'Rows deleted', 'monitoredUserId' → 'Monitored user id'."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(key)).replace("_", " ").strip()
    return words[:1].upper() + words[1:].lower() if words else str(key)


def _value_html(value: object) -> SafeString:
    if isinstance(value, dict):
        return fields(value)
    if isinstance(value, list | tuple):
        if not value:
            return mark_safe('<span class="muted">none</span>')
        if all(not isinstance(v, dict | list | tuple) for v in value):
            return format_html("{}", ", ".join(map(str, value)))
        return format_html_join("", "<div>{}</div>", ((_value_html(v),) for v in value))
    if value is None or value == "":
        return mark_safe('<span class="muted">—</span>')
    if isinstance(value, bool):
        return format_html("{}", "yes" if value else "no")
    return format_html("{}", value)


@register.filter
def fields(data: object) -> SafeString:
    """A job's payload or result as labelled fields (a <dl>), not a Python dict."""
    if not isinstance(data, dict):
        return format_html('<pre class="code">{}</pre>', data)
    if not data:
        return mark_safe('<p class="muted">Nothing.</p>')
    rows = format_html_join(
        "",
        '<dt>{} <small class="muted machine-name">{}</small></dt><dd>{}</dd>',
        ((_field_name(key), key, _value_html(value)) for key, value in data.items()),
    )
    return format_html('<dl class="facts">{}</dl>', rows)


@register.filter
def when(value: datetime | None) -> SafeString | str:
    """An absolute time for tables: "7 Dec 12:01:21 UTC" (with the year when it is not this
    year), in the active time zone, the full timestamp on hover."""
    if not value:
        return ""
    local = timezone.localtime(value)
    now = timezone.localtime()
    shown = local.strftime("%-d %b %H:%M:%S" if local.year == now.year else "%-d %b %Y %H:%M:%S")
    return format_html(
        '<time datetime="{}" title="{}">{} {}</time>',
        value.isoformat(),
        local.strftime("%A %Y-%m-%d %H:%M:%S %Z"),
        shown,
        local.tzname(),
    )


@register.filter
def ago(value: datetime | None) -> SafeString | str:
    """A relative time ("4 min ago", "just now", "in 2 h") with the exact time on hover."""
    if not value:
        return ""
    seconds = (timezone.now() - value).total_seconds()
    span = abs(seconds)
    if span < 60:
        words = "just now" if seconds >= 0 else "in under a minute"
    else:
        for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
            if span >= size:
                amount = int(span // size)
                words = f"{amount} {unit} ago" if seconds > 0 else f"in {amount} {unit}"
                break
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        words,
    )
