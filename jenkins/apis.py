"""Thin API views: validate, call one service, serialize. Reads are filtered by who asks.

Permissions: servers are admin-only; jobs are read by every signed-in user and changed by
admins; builds are read and triggered by every signed-in user and cancelled by whoever
triggered them or an admin; tokens belong to their user (admins may list and revoke all).
A run's Jenkins builds and callbacks are for whoever may see the run (who started it, or an
admin); only they may add a callback.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from jenkins import selectors, services
from jenkins.models import ApiToken, JenkinsBuild, JenkinsJob, JenkinsServer, RunCallback
from jenkins.serializers import (
    BuildDetailOutput,
    BuildOutput,
    BuildTriggerInput,
    ConsoleOutput,
    ConsoleQuery,
    JobInput,
    JobOutput,
    JobUpdateInput,
    RunCallbackInput,
    RunCallbackOutput,
    ServerCheckOutput,
    ServerInput,
    ServerOutput,
    ServerUpdateInput,
    TokenCreatedOutput,
    TokenInput,
    TokenOutput,
)
from jenkins.services.builds import console_marker
from machines.apis import IsAdminOrReadOnly
from test_management_system.errors import ApplicationError, NotFoundError
from test_runner.models import TestRun

SOURCE = "api"


# --- servers ----------------------------------------------------------------------------------


class _ServerApi(generics.GenericAPIView):
    permission_classes = [permissions.IsAdminUser]
    serializer_class: type[serializers.BaseSerializer] = ServerOutput

    def get_queryset(self) -> QuerySet[JenkinsServer]:
        return selectors.server_list(user=self.request.user)


class ServerListApi(_ServerApi, generics.ListAPIView):
    """Jenkins servers (admins only). The API token is write-only."""

    search_fields = ["name", "url"]
    ordering_fields = ["name", "created_at"]

    @extend_schema(request=ServerInput, responses={201: ServerOutput})
    def post(self, request: Request) -> Response:
        data = ServerInput(data=request.data)
        data.is_valid(raise_exception=True)
        server = services.jenkins_server_create(
            actor=request.user, source=SOURCE, **data.validated_data
        )
        return Response(ServerOutput(server).data, status=status.HTTP_201_CREATED)


class ServerDetailApi(_ServerApi, generics.RetrieveAPIView):
    @extend_schema(request=ServerUpdateInput, responses=ServerOutput)
    def patch(self, request: Request, pk: int) -> Response:
        data = ServerUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        server = services.jenkins_server_update(
            server=self.get_object(), actor=request.user, source=SOURCE, **data.validated_data
        )
        return Response(ServerOutput(server).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.jenkins_server_delete(server=self.get_object(), actor=request.user, source=SOURCE)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ServerCheckApi(_ServerApi):
    """Connects with the stored credentials and reports the Jenkins version or the problem."""

    serializer_class = ServerCheckOutput

    @extend_schema(request=None, responses=ServerCheckOutput)
    def post(self, request: Request, pk: int) -> Response:
        result = services.jenkins_server_check(server=self.get_object())
        return Response(ServerCheckOutput(result).data)


# --- jobs -------------------------------------------------------------------------------------


class JobFilter(django_filters.FilterSet):
    class Meta:
        model = JenkinsJob
        fields = ["server", "enabled"]


class _JobApi(generics.GenericAPIView):
    permission_classes = [IsAdminOrReadOnly]
    serializer_class = JobOutput

    def get_queryset(self) -> QuerySet[JenkinsJob]:
        return selectors.job_list(user=self.request.user)


class JobListApi(_JobApi, generics.ListAPIView):
    """Jobs users may trigger. Admins add them here."""

    filterset_class = JobFilter
    search_fields = ["full_name", "description"]
    ordering_fields = ["full_name", "created_at"]

    @extend_schema(request=JobInput, responses={201: JobOutput})
    def post(self, request: Request) -> Response:
        data = JobInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.jenkins_job_create(actor=request.user, source=SOURCE, **data.validated_data)
        return Response(JobOutput(job).data, status=status.HTTP_201_CREATED)


class JobDetailApi(_JobApi, generics.RetrieveAPIView):
    @extend_schema(request=JobUpdateInput, responses=JobOutput)
    def patch(self, request: Request, pk: int) -> Response:
        data = JobUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        job = services.jenkins_job_update(
            job=self.get_object(), actor=request.user, source=SOURCE, **data.validated_data
        )
        return Response(JobOutput(job).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.jenkins_job_delete(job=self.get_object(), actor=request.user, source=SOURCE)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- builds -----------------------------------------------------------------------------------


class BuildFilter(django_filters.FilterSet):
    mine = django_filters.BooleanFilter(method="filter_mine", label="Only builds I triggered")

    class Meta:
        model = JenkinsBuild
        fields = ["job", "status", "result", "mine"]

    def filter_mine(
        self, queryset: QuerySet[JenkinsBuild], name: str, value: bool
    ) -> QuerySet[JenkinsBuild]:
        user = self.request.user if self.request is not None else None
        if not value or user is None:
            return queryset
        return queryset.filter(triggered_by_id=user.pk)


class _BuildApi(generics.GenericAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class: type[serializers.BaseSerializer] = BuildOutput

    def get_queryset(self) -> QuerySet[JenkinsBuild]:
        return selectors.build_list(user=self.request.user)


class BuildListApi(_BuildApi, generics.ListAPIView):
    """Builds started from here, newest first. POST starts one (answered 202: it is queued)."""

    filterset_class = BuildFilter
    ordering_fields = ["created_at", "finished_at", "status"]

    @extend_schema(request=BuildTriggerInput, responses={202: BuildOutput})
    def post(self, request: Request) -> Response:
        data = BuildTriggerInput(data=request.data)
        data.is_valid(raise_exception=True)
        run = None
        run_id = data.validated_data.get("run")
        if run_id is not None:
            run = selectors.run_visible(user=request.user, run_id=run_id)
            if run is None:
                raise ApplicationError(
                    f"No test run {run_id} that you may see.", extra={"field": "run"}
                )
        build = services.jenkins_build_create(
            job=data.validated_data["job"],
            parameters=data.validated_data["parameters"],
            actor=request.user,
            source=SOURCE,
            run=run,
        )
        return Response(BuildOutput(build).data, status=status.HTTP_202_ACCEPTED)


class BuildDetailApi(_BuildApi, generics.RetrieveAPIView):
    """A build with its console (the tail, when long) and its imported test report."""

    serializer_class = BuildDetailOutput


class BuildCancelApi(_BuildApi):
    """Cancels a queued build or stops a running one (whoever triggered it, or an admin)."""

    # Jenkins is asked while the caller waits: its failures are documented in the schema.
    upstream_statuses = (502, 503, 504)

    @extend_schema(request=None, responses=BuildOutput)
    def post(self, request: Request, pk: int) -> Response:
        build = self.get_object()
        if not selectors.user_can_cancel_build(user=request.user, build=build):
            raise ApplicationError(
                "Only whoever triggered this build, or an admin, may cancel it.", status_code=403
            )
        build = services.jenkins_build_cancel(build=build, actor=request.user, source=SOURCE)
        return Response(BuildOutput(build).data)


class BuildConsoleApi(_BuildApi):
    """Console text from ``offset`` (characters); poll with ``next_offset`` to tail it live."""

    serializer_class = ConsoleOutput

    @extend_schema(
        parameters=[OpenApiParameter("offset", int, description="Start, from next_offset.")],
        responses=ConsoleOutput,
    )
    def get(self, request: Request, pk: int) -> Response:
        query = ConsoleQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        build = self.get_object()
        offset: int = query.validated_data["offset"]
        start = max(offset, build.console_dropped)
        text = build.console_text[start - build.console_dropped :]
        truncated = offset < build.console_dropped
        if truncated:
            text = console_marker(build) + text
        body: dict[str, Any] = {
            "offset": start,
            "next_offset": build.console_length,
            "text": text,
            "truncated": truncated,
            "complete": build.is_done,
            "status": build.status,
            "result": build.result,
        }
        return Response(ConsoleOutput(body).data)


# --- a run's builds and callbacks -------------------------------------------------------------


class _RunPartApi(generics.GenericAPIView):
    permission_classes = [permissions.IsAuthenticated]

    def run(self) -> TestRun:
        run = selectors.run_visible(user=self.request.user, run_id=self.kwargs["pk"])
        if run is None:
            raise NotFoundError(f"No test run {self.kwargs['pk']} that you may see.")
        return run


class RunBuildListApi(_RunPartApi, generics.ListAPIView):
    """Jenkins builds linked to a run (e.g. the firmware it tests), newest first; follow one
    with /jenkins/builds/{id}/ and its console/."""

    serializer_class = BuildOutput

    def get_queryset(self) -> QuerySet[JenkinsBuild]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return JenkinsBuild.objects.none()
        return selectors.run_build_list(user=self.request.user, run=self.run())


class RunCallbackListApi(_RunPartApi, generics.ListAPIView):
    """URLs POSTed to when the run finishes, with their delivery record. POST adds one (who
    started the run, or an admin); adding the same URL again returns the existing one."""

    serializer_class = RunCallbackOutput
    pagination_class = None

    def get_queryset(self) -> QuerySet[RunCallback]:
        if getattr(self, "swagger_fake_view", False):
            return RunCallback.objects.none()
        return selectors.run_callback_list(run=self.run())

    @extend_schema(request=RunCallbackInput, responses={201: RunCallbackOutput})
    def post(self, request: Request, pk: int) -> Response:
        run = self.run()
        if not selectors.user_can_control_run(user=request.user, run=run):
            raise ApplicationError(
                "Only who started the run, or an admin, may add a callback.", status_code=403
            )
        data = RunCallbackInput(data=request.data)
        data.is_valid(raise_exception=True)
        callback, created = services.run_callback_create(
            run=run,
            url=data.validated_data["url"],
            actor=request.user,
            source=SOURCE,
            base_url=request.build_absolute_uri("/"),
        )
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(RunCallbackOutput(callback).data, status=code)


# --- tokens -----------------------------------------------------------------------------------


class _TokenApi(generics.GenericAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = TokenOutput

    def get_queryset(self) -> QuerySet[ApiToken]:
        return selectors.token_list(user=self.request.user)


class TokenListApi(_TokenApi, generics.ListAPIView):
    """Your API tokens (admins: everyone's). POST makes one; its secret is in that answer only."""

    ordering_fields = ["created_at", "last_used_at", "name"]

    @extend_schema(request=TokenInput, responses={201: TokenCreatedOutput})
    def post(self, request: Request) -> Response:
        data = TokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        token, raw = services.api_token_create(
            user=request.user,  # type: ignore[arg-type]  # IsAuthenticated: a real user
            name=data.validated_data["name"],
            expires_at=data.validated_data.get("expires_at"),
            source=SOURCE,
        )
        token.token = raw  # type: ignore[attr-defined]  # shown once, never stored
        return Response(TokenCreatedOutput(token).data, status=status.HTTP_201_CREATED)


class TokenDetailApi(_TokenApi, generics.RetrieveAPIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        """Revokes the token (kept, marked revoked, for the record)."""
        services.api_token_revoke(token=self.get_object(), actor=request.user, source=SOURCE)
        return Response(status=status.HTTP_204_NO_CONTENT)
