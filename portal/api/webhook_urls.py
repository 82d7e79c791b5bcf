"""Graph's webhook endpoints, under /api/webhooks/ (public: each item carries a clientState)."""

from django.urls import path

from portal.api import webhook_views

urlpatterns = [
    path("mail", webhook_views.mail, name="webhook_mail"),
    path("teams", webhook_views.teams, name="webhook_teams"),
    path("lifecycle", webhook_views.lifecycle, name="webhook_lifecycle"),
]
