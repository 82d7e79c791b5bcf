from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    """The stock admin app, with the role-guarded site (kept apart: app configs load early)."""

    default_site = "portal.access.admin_site.PortalAdminSite"
