"""Graph's webhook endpoints (the receiver views arrive with the webhook issue)."""

urlpatterns: list = []
