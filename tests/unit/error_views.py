"""Views that fail in each way the API error handler must shape (mounted by test_errors.py)."""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.urls import include, path
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from test_management_system.errors import ApplicationError, ConflictError


class _Input(serializers.Serializer):
    name = serializers.CharField(max_length=5)
    count = serializers.IntegerField(min_value=1)


class Failing(APIView):
    permission_classes = []  # the failure under test is the view's own

    def post(self, request: Request, kind: str) -> Response:
        if kind == "validation":
            _Input(data=request.data).is_valid(raise_exception=True)
        if kind == "application":
            raise ApplicationError("Machine lab-3 is in maintenance.", extra={"machine": "lab-3"})
        if kind == "conflict":
            raise ConflictError("Run 7 has already finished.")
        if kind == "django-validation":
            raise DjangoValidationError({"port": ["Port must be between 1 and 65535."]})
        if kind == "http404":
            raise Http404("no such thing")
        if kind == "denied":
            raise PermissionDenied
        if kind == "bug":
            raise ZeroDivisionError("division by zero")
        return Response({"ok": True})


handler404 = "test_management_system.errors.page_not_found"
handler500 = "test_management_system.errors.server_error"

urlpatterns = [
    path("api/v1/fail/<str:kind>/", Failing.as_view()),
    path("", include("test_management_system.urls")),
]
