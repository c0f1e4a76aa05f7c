from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from test_management_system import errors, health, views

handler400 = "test_management_system.errors.bad_request"
handler403 = "test_management_system.errors.permission_denied"
handler404 = "test_management_system.errors.page_not_found"
handler500 = "test_management_system.errors.server_error"

api_v1: list[URLPattern | URLResolver] = [
    path("me/", views.MeApi.as_view(), name="me"),
    path("", include("machines.urls")),
    path("", include("jenkins.urls")),
    path("", include("test_runner.urls")),
    path("", include("test_runner.ingest.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    # Last: any other /api/ path answers JSON, even with DEBUG on, and for any method (a POST
    # there would otherwise get the HTML CSRF page; this view writes nothing).
    re_path(r"^.*$", csrf_exempt(errors.page_not_found), name="not-found"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("health/", health.live, name="health-live"),
    path("health/ready/", health.ready, name="health-ready"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password_change/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("accounts/password_reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "accounts/password_reset/done/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("", include("test_runner.ingest.legacy_urls")),
    path("", include("test_runner.web.urls")),
    path("", include("machines.web")),
    path("", include("jenkins.web")),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"))),
]
