"""`{{ upn|breakable }}`: a UPN (or any dotted name) that may wrap at its dots and its @."""

from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.filter
def breakable(value: object) -> SafeString:
    """The escaped text with a line-break opportunity (<wbr>) after each "@" and ".": a
    long UPN wraps between its parts instead of widening its table."""
    return mark_safe(re.sub(r"([@.])", r"\1<wbr>", str(escape(value))))  # noqa: S308 (escaped first)
