"""One application error type, and one way every API error reaches a client.

Every API error body is ``{"message": str, "extra": dict}``. Services raise
``ApplicationError`` (or a subclass) with a message a lab engineer understands; the handler below
turns it, DRF's own exceptions, Django's and anything unexpected into that shape, so the API never
answers with an HTML error page.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error

from test_management_system.logging import request_id_var

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A failure the caller can understand and act on; ``status_code`` says which HTTP status."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(
        self, message: str, *, extra: dict[str, Any] | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        if status_code is not None:
            self.status_code = status_code


class NotFoundError(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND


class ConflictError(ApplicationError):
    """The request is valid but the current state forbids it (e.g. cancelling a finished run)."""

    status_code = status.HTTP_409_CONFLICT


def error_body(message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"message": message, "extra": extra or {}}


def _first_message(detail: Any) -> str:
    """The first human sentence in a DRF error detail (dict/list/str, nested)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            return inner if key in ("non_field_errors", "detail") else f"{key}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.message, exc.extra), status=exc.status_code)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or restarting: tell the client to come back, not that we broke.
        logger.error("Database unavailable during API call: %s", exc)
        return Response(
            error_body(
                "The database is not reachable right now; nothing was changed. Try again shortly.",
                {"request_id": request_id_var.get()},
            ),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, DataError):
        # The database refused a value the input carried that passed validation (a time zone
        # offset or a number beyond what PostgreSQL stores): bad input, not a server fault.
        logger.warning("API input refused by the database: %s", exc)
        return Response(
            error_body(
                "Invalid input: a value is outside what can be stored or compared "
                "(check dates, time zone offsets and numbers)."
            ),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("The request body is too large; send a smaller one."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        # Raised while reading a hostile or broken request (too many fields, bad multipart):
        # the client's fault, as Django itself answers outside DRF.
        logger.warning("Suspicious API request: %s", exc)
        return Response(error_body(f"Bad request: {exc}"), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    # Imported here: rest_framework.views loads the authentication classes, which may import
    # this module's error types.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        # Not an API exception: a bug or an infrastructure fault. Log it with its traceback and
        # give the client something it can quote to an admin instead of an HTML 500 page.
        request_id = request_id_var.get()
        logger.exception("Unhandled error in API view (request %s)", request_id)
        return Response(
            error_body(
                "Internal server error. The administrators can find the details in the server "
                f"log under request id {request_id}.",
                {"request_id": request_id},
            ),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    if isinstance(exc, drf_exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(
            f"Invalid input: {_first_message(exc.detail)}", {"fields": fields}
        )
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        extra: dict[str, Any] = {}
        wait = getattr(exc, "wait", None)
        if isinstance(exc, drf_exceptions.Throttled) and wait is not None:
            extra["retry_after_seconds"] = wait
        response.data = error_body(str(detail or exc), extra)
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            error_body(f"No API endpoint at {request.path}."), status=status.HTTP_404_NOT_FOUND
        )
    return render(request, "errors/404.html", status=status.HTTP_404_NOT_FOUND)


def server_error(request: HttpRequest) -> HttpResponse:
    request_id = request_id_var.get()
    body = error_body(
        f"Internal server error (request id {request_id}).", {"request_id": request_id}
    )
    if _is_api(request):
        return JsonResponse(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return render(
        request,
        "errors/500.html",
        {"request_id": request_id},
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            error_body("You do not have permission to do that."),
            status=status.HTTP_403_FORBIDDEN,
        )
    return render(request, "errors/403.html", status=status.HTTP_403_FORBIDDEN)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("Bad request."), status=status.HTTP_400_BAD_REQUEST)
    return render(request, "errors/400.html", status=status.HTTP_400_BAD_REQUEST)
