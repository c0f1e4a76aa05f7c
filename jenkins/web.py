"""Web pages for Jenkins builds started from here: the list, and one build with its console,
which the page tails live through the API's ``console/?offset=`` (the poll task fills it)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from jenkins import selectors, services
from jenkins.models import JenkinsBuild
from jenkins.services.builds import console_marker
from test_management_system.errors import ApplicationError
from test_management_system.views import clean_text, paginate, query_without_page, web_view

SOURCE = "web"
app_name = "ci"


@web_view
@require_GET
def build_list(request: HttpRequest) -> HttpResponse:
    builds = selectors.build_list(user=request.user)
    status = request.GET.get("status", "")
    if status in JenkinsBuild.Status.values:
        builds = builds.filter(status=status)
    if request.GET.get("mine") == "1":
        builds = builds.filter(triggered_by_id=request.user.pk)
    return render(
        request,
        "jenkins/build_list.html",
        {
            "page": paginate(request, builds),
            "query": query_without_page(request),
            "status": status,
            "statuses": JenkinsBuild.Status.choices,
            "mine": request.GET.get("mine") == "1",
        },
    )


@web_view
@require_GET
def build_detail(request: HttpRequest, pk: int) -> HttpResponse:
    build = get_object_or_404(selectors.build_list(user=request.user), pk=pk)
    console = clean_text(
        console_marker(build) + build.console_text, limit=len(build.console_text) + 1000
    )
    report = build.test_report or None
    return render(
        request,
        "jenkins/build_detail.html",
        {
            "build": build,
            "console": console,
            "report": report,
            "failed_cases": [
                c for c in (report or {}).get("cases", []) if c.get("outcome") == "failed"
            ],
            "parameters": [(k, clean_text(v)) for k, v in sorted((build.parameters or {}).items())],
            "can_cancel": selectors.user_can_cancel_build(user=request.user, build=build),
        },
    )


@web_view
@require_POST
def build_cancel(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    build = get_object_or_404(selectors.build_list(user=request.user), pk=pk)
    if not selectors.user_can_cancel_build(user=request.user, build=build):
        messages.error(request, "Only whoever triggered this build, or an admin, may cancel it.")
        return redirect("ci:build-detail", pk=build.pk)
    try:
        services.jenkins_build_cancel(build=build, actor=request.user, source=SOURCE)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Cancel requested for {build}.")
    return redirect("ci:build-detail", pk=build.pk)


urlpatterns = [
    path("jenkins/builds/", build_list, name="build-list"),
    path("jenkins/builds/<int:pk>/", build_detail, name="build-detail"),
    path("jenkins/builds/<int:pk>/cancel/", build_cancel, name="build-cancel"),
]
