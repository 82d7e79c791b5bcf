from django.urls import include, path

app_name = "api"

urlpatterns = [
    path("webhooks/", include("integrations.microsoft.webhook_urls")),
]
