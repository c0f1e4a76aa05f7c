"""``Authorization: Bearer <token>`` (or ``Token <token>``) with a personal API token.

Only requests that carry one of these schemes are answered 401 when the token is bad (with a
``WWW-Authenticate`` header saying why); requests with no such header fall through to the next
authentication class, and anonymous callers keep getting 403 as before.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from jenkins import services
from jenkins.models import ApiToken
from test_management_system.tokens import bearer_token, uses_bearer


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        raw = bearer_token(request)
        if raw is None:
            return None
        token = (
            ApiToken.objects.select_related("user")
            .filter(key_hash=services.token_hash(raw))
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid API token.")
        now = timezone.now()
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed(
                f"API token {token.prefix}... ({token.name}) was revoked on "
                f"{token.revoked_at:%Y-%m-%d %H:%M} UTC; create a new one."
            )
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed(
                f"API token {token.prefix}... ({token.name}) expired on "
                f"{token.expires_at:%Y-%m-%d %H:%M} UTC; create a new one."
            )
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The account of this API token is disabled.")
        services.api_token_mark_used(token=token)
        return token.user, token

    def authenticate_header(self, request: Request) -> str | None:
        # Only for callers who tried a token: everyone else keeps the 403 the session auth gives.
        if not uses_bearer(request):
            return None
        return 'Bearer realm="api"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Describes the token scheme in the OpenAPI schema."""

    target_class = "jenkins.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token from /api/v1/tokens/ ('Token <t>' works too).",
        }
