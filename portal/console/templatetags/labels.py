"""Human names for machine names on screen, the machine name kept in small print."""

from __future__ import annotations

import re

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from portal.jobs.registry import job_type_label

register = template.Library()


@register.filter
def job_type(name: str) -> SafeString:
    """ "Delta sync <small>graph.sync_delta</small>" (the name alone when it has no label)."""
    label = job_type_label(name)
    if label == name:
        return format_html("<code>{}</code>", name)
    return format_html('{} <small class="muted machine-name">{}</small>', label, name)


def _field_name(key: object) -> str:
    """'rows_deleted' → 'Rows deleted', 'monitoredUserId' → 'Monitored user id'."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(key)).replace("_", " ").strip()
    return words[:1].upper() + words[1:].lower() if words else str(key)


def _value_html(value: object) -> SafeString:
    if isinstance(value, dict):
        return fields(value)
    if isinstance(value, list | tuple):
        if not value:
            return format_html('<span class="muted">none</span>')
        if all(not isinstance(v, dict | list | tuple) for v in value):
            return format_html("{}", ", ".join(map(str, value)))
        return format_html_join("", "<div>{}</div>", ((_value_html(v),) for v in value))
    if value is None or value == "":
        return format_html('<span class="muted">—</span>')
    if isinstance(value, bool):
        return format_html("{}", "yes" if value else "no")
    return format_html("{}", value)


@register.filter
def fields(data: object) -> SafeString:
    """A job's payload or result as labelled fields (a <dl>), not a Python dict."""
    if not isinstance(data, dict):
        return format_html('<pre class="code">{}</pre>', data)
    if not data:
        return format_html('<p class="muted">Nothing.</p>')
    rows = format_html_join(
        "",
        '<dt>{} <small class="muted machine-name">{}</small></dt><dd>{}</dd>',
        ((_field_name(key), key, _value_html(value)) for key, value in data.items()),
    )
    return format_html('<dl class="facts">{}</dl>', rows)
