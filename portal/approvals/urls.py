from django.urls import path

from portal.approvals import views

app_name = "approvals"

urlpatterns = [
    path("", views.approval_list, name="list"),
    path("new", views.approval_new, name="new"),
    path("policy", views.policy_page, name="policy"),
    path("<int:request_id>/", views.approval_detail, name="detail"),
    path("<int:request_id>/<slug:decision>", views.approval_decide, name="decide"),
]
