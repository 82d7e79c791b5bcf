from django.urls import path

from portal.console import jobs_views, settings_views, views

app_name = "console"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("audit/", views.audit_log, name="audit"),
    path("audit/export.csv", views.audit_export, name="audit_export"),
    path("settings/", settings_views.settings_page, name="settings"),
    path("settings/<str:key>", settings_views.settings_change, name="settings_change"),
    path("jobs/", jobs_views.job_list, name="jobs"),
    path("jobs/<int:job_id>/", jobs_views.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/retry", jobs_views.job_retry, name="job_retry"),
    path("jobs/<int:job_id>/discard", jobs_views.job_discard, name="job_discard"),
    path("jobs/retry-all", jobs_views.retry_all, name="jobs_retry_all"),
    path("jobs/types/pause", jobs_views.job_type_pause, name="job_type_pause"),
    path("jobs/operations/<int:operation_id>/", jobs_views.bulk_operation,
         name="bulk_operation"),
    path("jobs/operations/<int:operation_id>/cancel", jobs_views.bulk_cancel,
         name="bulk_cancel"),
]
