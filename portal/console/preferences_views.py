"""Your preferences: the time zone the console shows times in."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.console import preferences


class TimeZoneForm(forms.Form):
    time_zone = forms.ChoiceField(label="Show times in", choices=())

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["time_zone"].choices = [(z, z) for z in preferences.time_zones()]  # type: ignore[attr-defined]


@require_http_methods(["GET", "POST"])
@requires("view_console")
def preferences_page(request: HttpRequest) -> HttpResponse:
    current = preferences.time_zone_of(request.user)
    form = TimeZoneForm(request.POST or None, initial={"time_zone": current})
    if request.method == "POST":
        if form.is_valid():
            chosen = preferences.set_time_zone(
                Actor.from_request(request), request.user, form.cleaned_data["time_zone"]
            )
            request.session[preferences.SESSION_KEY] = chosen
            messages.success(request, f"Times are now shown in {chosen}.")
            return redirect("console:preferences")
        return render(request, "console/preferences.html", {"form": form}, status=400)
    return render(request, "console/preferences.html", {"form": form, "current": current})
