from django.urls import path

from test_runner.web import cases, sse, views

app_name = "web"

urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("runs/", views.run_history, name="run-history"),
    path("runs/new/", views.run_start, name="run-start"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("runs/<int:pk>/summary/", views.run_summary, name="run-summary"),
    path("runs/<int:pk>/tests/", views.run_tests, name="run-tests"),
    path("runs/<int:pk>/live/", views.run_live, name="run-live"),
    path("runs/<int:pk>/stream/", sse.run_stream, name="run-stream"),
    path("runs/<int:pk>/<slug:action>/", views.run_action, name="run-action"),
    path("cases/", cases.case_list, name="case-list"),
    path("cases/new/", cases.case_create, name="case-create"),
    path("cases/<int:pk>/", cases.case_detail, name="case-detail"),
    path("cases/<int:pk>/edit/", cases.case_edit, name="case-edit"),
]
