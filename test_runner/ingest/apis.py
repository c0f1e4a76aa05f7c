"""The ingest endpoints: what a machine running its own suite posts, and the run's tree."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from test_management_system.errors import NotFoundError
from test_runner import selectors
from test_runner.ingest import serializers as s
from test_runner.ingest import services
from test_runner.ingest.auth import HasIngestToken, IngestTokenAuthentication
from test_runner.models import IngestToken, RunSource, TestResult, TestRun


class _IngestApi(APIView):
    authentication_classes = [IngestTokenAuthentication]
    permission_classes = [HasIngestToken]
    throttle_classes: list[type] = []  # machines post every test; the token is the gate


def _token(request: Request) -> IngestToken:
    token = request.auth
    assert isinstance(token, IngestToken)  # HasIngestToken let the request in
    return token


def _test_output(result: TestResult) -> dict[str, object]:
    run = TestRun.objects.only("status", "outcome").get(pk=result.run_id)
    return {"run": result.run_id, "test_id": result.test_id, "status": result.outcome,
            "run_status": run.status, "run_outcome": run.outcome}  # fmt: skip


class DryRunApi(_IngestApi):
    """The whole plan, before anything runs: makes a run with every test planned."""

    @extend_schema(request=s.DryRunInput, responses={201: s.DryRunOutput})
    def post(self, request: Request) -> Response:
        data = s.DryRunInput(data=request.data)
        data.is_valid(raise_exception=True)
        run = services.dry_run(token=_token(request), data=data.validated_data)
        body = {"run": run.pk, "case": run.case.name, "planned": run.planned, "status": run.status}
        return Response(body, status=201)


class TestStartApi(_IngestApi):
    """A test script started: the first planned test of that file name is running."""

    @extend_schema(request=s.TestStartInput, responses={200: s.TestOutput})
    def post(self, request: Request) -> Response:
        data = s.TestStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.test_start(token=_token(request), data=data.validated_data)
        return Response(_test_output(result))


class TestStopApi(_IngestApi):
    """A test script stopped with a status; the run ends when every test has stopped."""

    @extend_schema(request=s.TestStopInput, responses={200: s.TestOutput})
    def post(self, request: Request) -> Response:
        data = s.TestStopInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.test_stop(token=_token(request), data=data.validated_data)
        return Response(_test_output(result))


@extend_schema(exclude=True)
class LegacyDryRunApi(DryRunApi):
    pass


@extend_schema(exclude=True)
class LegacyTestStartApi(TestStartApi):
    pass


@extend_schema(exclude=True)
class LegacyTestStopApi(TestStopApi):
    pass


class RunTreeApi(APIView):
    """A reported run as its plan: scenarios (with a rolled-up status) and their tests."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=s.TreeOutput)
    def get(self, request: Request, pk: int) -> Response:
        run = (
            selectors.run_list(user=request.user)
            .filter(pk=pk, source=RunSource.EXTERNAL)
            .select_related("case", "machine")
            .first()
        )
        if run is None:
            raise NotFoundError(f"No reported run {pk}.")
        return Response(s.TreeOutput(services.run_tree(run=run)).data)
