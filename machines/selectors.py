"""Reads, with access checks: admins see everything, others what is assigned to them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from machines.models import AuditEntry, Board, Machine, Venv

User = AbstractBaseUser | AnonymousUser


def is_admin(user: User) -> bool:
    return bool(user.is_authenticated and getattr(user, "is_staff", False))


def _assigned(user: User, prefix: str = "") -> Q:
    return Q(**{f"{prefix}users": user}) | Q(**{f"{prefix}groups__user": user})


def machine_list(*, user: User) -> QuerySet[Machine]:
    qs = Machine.objects.all()
    if not is_admin(user):
        if not user.is_authenticated:
            return qs.none()
        qs = qs.filter(pk__in=Machine.objects.filter(_assigned(user)).values("pk"))
    return qs.prefetch_related("labels")


def user_can_use_machine(*, user: User, machine: Machine) -> bool:
    return machine_list(user=user).filter(pk=machine.pk).exists()


def board_list(*, user: User) -> QuerySet[Board]:
    qs = Board.objects.select_related("machine", "locked_by").prefetch_related("labels")
    if is_admin(user):
        return qs
    return qs.filter(machine__in=machine_list(user=user).values("pk"))


def venv_list(*, user: User) -> QuerySet[Venv]:
    qs = Venv.objects.select_related("machine")
    if is_admin(user):
        return qs
    return qs.filter(machine__in=machine_list(user=user).values("pk"))


def audit_list(*, user: User) -> QuerySet[AuditEntry]:
    if not is_admin(user):
        return AuditEntry.objects.none()
    return AuditEntry.objects.select_related("actor")
