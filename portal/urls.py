from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from portal.access import views as access_views
from portal.access.decorators import public
from portal.monitoring import health, metrics


@public  # browsers ask for it on every page, the sign-in page and the admin included
@require_GET
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico: the static icon (its hashed name in production), not a 404 page."""
    return HttpResponseRedirect(static("portal/favicon.ico"))


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("login/", public(access_views.PortalLoginView.as_view()), name="login"),
    path("login/microsoft/", access_views.sign_in_with_microsoft, name="sso_login"),
    path(
        "login/microsoft/callback",
        access_views.sign_in_with_microsoft_callback,
        name="sso_callback",
    ),
    path("logout/", public(auth_views.LogoutView.as_view()), name="logout"),
    path("login/second-step/", access_views.second_factor, name="second_factor"),
    path("login/set-up/<str:token>/", access_views.mfa_enrol, name="mfa_enrol"),
    path("admin/", admin.site.urls),
    path("api/", include("portal.api.urls")),
    path("approvals/", include("portal.approvals.urls")),
    path("", include("portal.console.urls")),
]

handler404 = "portal.lib.error_pages.not_found"
handler500 = "portal.lib.error_pages.server_error"
