"""``Authorization: Bearer <token>`` (or ``Token <token>``) with a machine's ingest token.

Used only by the ingest endpoints: a request without a valid, unrevoked token is answered 401.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request
from rest_framework.views import APIView

from test_management_system.tokens import bearer_token
from test_runner.ingest import services
from test_runner.models import IngestToken


class IngestTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, IngestToken] | None:
        raw = bearer_token(request)
        if raw is None:
            return None
        token = (
            IngestToken.objects.select_related("machine")
            .filter(key_hash=services.token_hash(raw))
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid ingest token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed(
                f"Ingest token {token.prefix}... ({token.name}) was revoked on "
                f"{token.revoked_at:%Y-%m-%d %H:%M} UTC; ask an admin for a new one."
            )
        services.ingest_token_mark_used(token=token)
        return AnonymousUser(), token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="ingest"'


class HasIngestToken(permissions.BasePermission):
    message = "An ingest token is required: send 'Authorization: Bearer <token>'."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.auth, IngestToken)


class IngestTokenScheme(OpenApiAuthenticationExtension):
    """Describes the ingest token scheme in the OpenAPI schema."""

    target_class = "test_runner.ingest.auth.IngestTokenAuthentication"
    name = "ingestToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A machine's ingest token (manage.py create_ingest_token).",
        }
