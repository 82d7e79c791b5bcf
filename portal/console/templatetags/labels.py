"""Human names for machine names on screen, the machine name kept in small print."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
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
