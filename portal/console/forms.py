from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.audit.actions import actions_described_by
from portal.audit.models import AuditEvent


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150, label="Actor")
    action = forms.CharField(required=False, max_length=100, label="Action")
    target_type = forms.CharField(required=False, max_length=64, label="Target type")
    target_id = forms.CharField(required=False, max_length=255, label="Target id")
    outcome = forms.ChoiceField(required=False, choices=[("", "any"), *AuditEvent.Outcome.choices])
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("'From' must not be after 'To'.")
        return data

    def filter(self, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        """Apply the (valid) filters; the keyset cursor is applied by the caller."""
        data = self.cleaned_data
        if data.get("actor"):
            queryset = queryset.filter(actor_name__istartswith=data["actor"])
        if data.get("action"):
            # The machine name's start ("jobs."), or words the screen shows ("paused").
            queryset = queryset.filter(
                Q(action__startswith=data["action"])
                | Q(action__in=actions_described_by(data["action"]))
            )
        if data.get("target_type"):
            queryset = queryset.filter(target_type=data["target_type"])
        if data.get("target_id"):
            queryset = queryset.filter(target_id=data["target_id"])
        if data.get("outcome"):
            queryset = queryset.filter(outcome=data["outcome"])
        # Whole days in the portal's time zone, as ranges so the created_at index is used.
        if data.get("date_from"):
            queryset = queryset.filter(created_at__gte=start_of_day(data["date_from"]))
        if data.get("date_to"):
            queryset = queryset.filter(
                created_at__lt=start_of_day(data["date_to"] + timedelta(days=1))
            )
        return queryset


def start_of_day(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))
