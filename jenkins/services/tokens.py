"""Personal API tokens: made once, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from jenkins.models import ApiToken
from machines.services.audit import Actor, audit_record
from test_management_system.errors import ApplicationError
from test_management_system.tokens import token_hash

TOKEN_PREFIX = "tms_"  # noqa: S105  # a marker, not a secret
# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@transaction.atomic
def api_token_create(
    *,
    user: AbstractBaseUser,
    name: str,
    source: str,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns it with the secret, which is never available again."""
    name = name.strip()
    if not name:
        raise ApplicationError("Give the token a name.", extra={"field": "name"})
    if expires_at is not None and expires_at <= timezone.now():
        raise ApplicationError("The expiry must be in the future.", extra={"field": "expires_at"})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user_id=user.pk,
                name=name,
                prefix=raw[: len(TOKEN_PREFIX) + 6],
                key_hash=token_hash(raw),
                expires_at=expires_at,
            )
    except IntegrityError:
        raise ApplicationError(
            f"You already have an active token named {name!r}.", extra={"field": "name"}
        ) from None
    audit_record(
        actor=user, source=source, action="api_token.create", target=token,
        changes={"name": name, "prefix": token.prefix, "expires_at": str(expires_at or "")},
    )  # fmt: skip
    return token, raw


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor: Actor, source: str) -> ApiToken:
    """Revokes the token from now on; revoking twice changes nothing."""
    updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db()
    if updated:
        audit_record(
            actor=actor, source=source, action="api_token.revoke", target=token,
            changes={"user": token.user.get_username()},
        )  # fmt: skip
    return token


def api_token_mark_used(*, token: ApiToken) -> None:
    """Records use, at most once per minute, in one conditional UPDATE (no lock, no read)."""
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    token.last_used_at = now
