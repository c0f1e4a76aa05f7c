from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import models

from machines.models import AuditEntry

Actor = AbstractBaseUser | AnonymousUser | None


def as_user(actor: Actor) -> User | None:
    """The signed-in user behind an actor, or None for the system and anonymous callers."""
    if actor is None or not actor.is_authenticated:
        return None
    return cast(User, actor)


SECRET_FIELDS = frozenset({"password", "private_key", "passphrase"})


def _printable(value: Any) -> Any:
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, list | tuple | set):
        return sorted(str(v) for v in value)
    return value


def audit_record(
    *,
    actor: Actor,
    source: str,
    action: str,
    target: models.Model,
    changes: dict[str, Any] | None = None,
) -> AuditEntry:
    """Writes one audit row. Secret fields appear only as "set" / "cleared", never their value."""
    safe: dict[str, Any] = {}
    for key, value in (changes or {}).items():
        if key in SECRET_FIELDS:
            safe[key] = "set" if value else "cleared"
        else:
            safe[key] = _printable(value)
    return AuditEntry.objects.create(
        actor=as_user(actor),
        source=source,
        action=action,
        target_type=target._meta.model_name or "",
        target_id=target.pk,
        target_repr=str(target)[:255],
        changes=safe,
    )
