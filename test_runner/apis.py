"""Thin API views for test cases and runs."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from test_management_system.errors import ApplicationError, NotFoundError
from test_runner import selectors, services
from test_runner.filters import CaseFilter, RunFilter
from test_runner.models import RunArtifact, TestCase, TestCaseVersion, TestRun
from test_runner.pagination import RunPagination
from test_runner.serializers import (
    ArtifactOutput,
    CaseInput,
    CaseOutput,
    CaseUpdateInput,
    EventOutput,
    EventsPageOutput,
    ResultOutput,
    RunInput,
    RunListOutput,
    RunOutput,
    VersionOutput,
)

MAX_EVENTS_PAGE = 5000


class CaseListApi(generics.ListAPIView):
    """Test cases. Anyone signed in reads them and creates their own."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = CaseOutput
    filterset_class = CaseFilter
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created_at", "updated_at"]

    def get_queryset(self) -> QuerySet[TestCase]:
        return selectors.case_list(user=self.request.user)

    @extend_schema(request=CaseInput, responses={201: CaseOutput})
    def post(self, request: Request) -> Response:
        data = CaseInput(data=request.data)
        data.is_valid(raise_exception=True)
        case = services.case_create(actor=request.user, **data.validated_data)
        return Response(CaseOutput(self.get_queryset().get(pk=case.pk)).data, status=201)


class CaseDetailApi(generics.RetrieveAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = CaseOutput

    def get_queryset(self) -> QuerySet[TestCase]:
        return selectors.case_list(user=self.request.user)

    def _editable(self) -> TestCase:
        case = self.get_object()
        if not selectors.user_can_edit_case(user=self.request.user, case=case):
            raise PermissionDenied("Only the case's owner or an admin may change it.")
        return case

    @extend_schema(request=CaseUpdateInput, responses=CaseOutput)
    def patch(self, request: Request, pk: int) -> Response:
        case = self._editable()
        data = CaseUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.case_update(case=case, actor=request.user, **data.validated_data)
        return Response(CaseOutput(self.get_queryset().get(pk=pk)).data)

    @extend_schema(responses={204: None}, description="Archives the case (runs keep it).")
    def delete(self, request: Request, pk: int) -> Response:
        services.case_update(case=self._editable(), actor=request.user, archived=True)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CaseVersionsApi(generics.ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = VersionOutput

    def get_queryset(self) -> QuerySet[TestCaseVersion]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return TestCaseVersion.objects.none()
        case = generics.get_object_or_404(
            selectors.case_list(user=self.request.user), pk=self.kwargs["pk"]
        )
        return case.versions.select_related("created_by").order_by("-number")


class RunListApi(generics.ListAPIView):
    """Runs: your own (admins: everyone's), newest first, as summaries (the detail has every
    field). Above 1,000 matching runs ``count`` is PostgreSQL's estimate and
    ``count_is_estimate`` is true. POST starts one."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = RunListOutput
    pagination_class = RunPagination
    filterset_class = RunFilter
    search_fields = ["case__name", "status_message", "machine__name"]
    ordering_fields = ["queued_at", "started_at", "finished_at", "priority", "status", "outcome"]

    def get_queryset(self) -> QuerySet[TestRun, dict[str, Any]]:
        return selectors.run_summaries(user=self.request.user)

    def paginate_queryset(self, queryset: QuerySet[Any, Any]) -> list[Any] | None:
        page = super().paginate_queryset(queryset)
        return None if page is None else selectors.run_summaries_named(page)

    @extend_schema(request=RunInput, responses={201: RunOutput})
    def post(self, request: Request) -> Response:
        data = RunInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields: dict[str, Any] = dict(data.validated_data)
        run = services.run_create(
            actor=request.user,
            case=fields.pop("case"),
            machine=fields.pop("machine", None),
            label=fields.pop("label", "") or "",
            board=fields.pop("board", None),
            **fields,
        )
        created = selectors.run_list(user=request.user).get(pk=run.pk)
        return Response(RunOutput(created).data, status=201)


class _RunMixin(generics.GenericAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = RunOutput

    def get_queryset(self) -> QuerySet[TestRun]:
        return selectors.run_list(user=self.request.user)

    def controlled_run(self) -> TestRun:
        run = self.get_object()
        if not selectors.user_can_control_run(user=self.request.user, run=run):
            raise PermissionDenied("Only who started the run, or an admin, may control it.")
        return run


class RunDetailApi(_RunMixin, generics.RetrieveAPIView):
    pass


class RunEventsApi(_RunMixin):
    """Events after ``after`` (a seq), oldest first: poll with the last seq you saw."""

    pagination_class = None  # paged by seq (after, limit), not by page number

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="last seq already seen (default 0)"),
            OpenApiParameter("limit", int, description=f"at most this many (<= {MAX_EVENTS_PAGE})"),
        ],
        responses=EventsPageOutput,
    )
    def get(self, request: Request, pk: int) -> Response:
        run = self.get_object()
        try:
            after = int(request.query_params.get("after", 0))
            limit = min(int(request.query_params.get("limit", 1000)), MAX_EVENTS_PAGE)
        except ValueError:
            raise ApplicationError("after and limit must be integers.") from None
        if after < 0 or limit < 1:
            raise ApplicationError("after must be >= 0 and limit >= 1.")
        events = selectors.run_events(run=run, after=after, limit=limit)
        return Response(
            {
                "run": run.pk,
                "status": run.status,
                "last_seq": run.last_seq,
                "events": EventOutput(events, many=True).data,
            }
        )


class RunLogApi(_RunMixin):
    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request: Request, pk: int) -> StreamingHttpResponse:
        run = self.get_object()
        lines = (line + "\n" for line in services.log_lines(run) if line)
        response = StreamingHttpResponse(lines, content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'inline; filename="run-{run.pk}.log"'
        return response


class RunResultsApi(_RunMixin):
    pagination_class = None  # every result of the run, in plan order

    @extend_schema(responses=ResultOutput(many=True))
    def get(self, request: Request, pk: int) -> Response:
        run = self.get_object()
        return Response(ResultOutput(selectors.run_results(run=run), many=True).data)


class RunJunitApi(_RunMixin):
    @extend_schema(responses={(200, "application/xml"): OpenApiTypes.STR})
    def get(self, request: Request, pk: int) -> HttpResponse:
        run = self.get_object()
        response = HttpResponse(services.junit_xml(run), content_type="application/xml")
        response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-junit.xml"'
        return response


class _RunActionApi(_RunMixin):
    action_name = ""

    @extend_schema(request=None, responses=RunOutput)
    def post(self, request: Request, pk: int) -> Response:
        run = self.controlled_run()
        action = getattr(services, f"run_{self.action_name}")
        result = action(run=run, actor=request.user)
        code = status.HTTP_201_CREATED if self.action_name == "retry" else status.HTTP_200_OK
        return Response(RunOutput(self.get_queryset().get(pk=result.pk)).data, status=code)


class RunCancelApi(_RunActionApi):
    action_name = "cancel"


class RunPauseApi(_RunActionApi):
    action_name = "pause"


class RunResumeApi(_RunActionApi):
    action_name = "resume"


class RunRetryApi(_RunActionApi):
    action_name = "retry"

    @extend_schema(request=None, responses={201: RunOutput})
    def post(self, request: Request, pk: int) -> Response:
        """Starts a new run of the same case, version and target (answered 201)."""
        return super().post(request, pk)


class RunArtifactsApi(_RunMixin):
    pagination_class = None  # every artifact of the run

    @extend_schema(responses=ArtifactOutput(many=True))
    def get(self, request: Request, pk: int) -> Response:
        run = self.get_object()
        return Response(ArtifactOutput(run.artifacts.all(), many=True).data)


class RunArtifactDownloadApi(_RunMixin):
    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, pk: int, name: str) -> FileResponse:
        run = self.get_object()
        artifact = RunArtifact.objects.filter(run=run, name=name).first()
        if artifact is None:
            raise NotFoundError(f"Run {run.pk} has no artifact {name!r}.")
        return FileResponse(artifact.file.open("rb"), as_attachment=True, filename=artifact.name)
