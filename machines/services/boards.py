from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from machines.models import Board, Machine
from machines.services.audit import Actor, as_user, audit_record
from machines.services.labels import labels_get_or_create
from test_management_system.errors import ApplicationError, ConflictError

DEFAULT_LEASE_TTL = timedelta(minutes=5)
BOARD_FIELDS = (
    "name", "description", "serial_port", "baud_rate", "data_bits", "parity", "stop_bits",
    "flow_control",
)  # fmt: skip


@transaction.atomic
def board_create(
    *, machine: Machine, actor: Actor, source: str, labels: list[str] | tuple[str, ...] = (),
    **fields: Any,
) -> Board:  # fmt: skip
    unknown = set(fields) - set(BOARD_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown board fields: {', '.join(sorted(unknown))}.")
    board = Board(machine=machine, **fields)
    board.full_clean()
    board.save()
    board.labels.set(labels_get_or_create(labels))
    audit_record(
        actor=actor, source=source, action="board.create", target=board,
        changes={**fields, "labels": list(labels)},
    )  # fmt: skip
    return board


@transaction.atomic
def board_update(
    *, board: Board, actor: Actor, source: str, labels: list[str] | None = None, **fields: Any
) -> Board:
    unknown = set(fields) - set(BOARD_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown board fields: {', '.join(sorted(unknown))}.")
    board = Board.objects.select_for_update().get(pk=board.pk)
    changes = {k: v for k, v in fields.items() if getattr(board, k) != v}
    for key, value in changes.items():
        setattr(board, key, value)
    board.full_clean()
    if changes:
        board.save(update_fields=[*changes, "updated_at"])
    if labels is not None:
        board.labels.set(labels_get_or_create(labels))
        changes["labels"] = labels
    if changes:
        audit_record(
            actor=actor, source=source, action="board.update", target=board, changes=changes
        )
    return board


@transaction.atomic
def board_set_locked(
    *, board: Board, actor: Actor, source: str, locked: bool, reason: str = ""
) -> Board:
    """An admin's maintenance lock: no run gets the board until it is unlocked. A run that
    holds it now keeps it until it finishes."""
    board.locked = locked
    board.locked_reason = reason if locked else ""
    board.locked_by = as_user(actor) if locked else None
    board.locked_at = timezone.now() if locked else None
    board.save(update_fields=["locked", "locked_reason", "locked_by", "locked_at", "updated_at"])
    audit_record(
        actor=actor, source=source, action="board.lock" if locked else "board.unlock",
        target=board, changes={"reason": reason} if locked else {},
    )  # fmt: skip
    return board


@transaction.atomic
def board_delete(*, board: Board, actor: Actor, source: str) -> None:
    board = Board.objects.select_for_update().get(pk=board.pk)
    if board.is_leased:
        raise ConflictError(f"Board {board} is held by {board.lease_holder}; wait or cancel.")
    audit_record(actor=actor, source=source, action="board.delete", target=board)
    board.delete()


def board_lease(
    *,
    machine: Machine,
    holder: str,
    board_id: int | None = None,
    labels: list[str] | tuple[str, ...] = (),
    ttl: timedelta = DEFAULT_LEASE_TTL,
) -> Board | None:
    """A free, unlocked board of ``machine`` (the given one, or one with all ``labels``)
    leased to ``holder``; None if none is free now. Idempotent per holder."""
    if not holder:
        raise ApplicationError("A lease needs a holder.")
    now = timezone.now()
    with transaction.atomic():
        mine = Board.objects.filter(lease_holder=holder).first()
        if mine is not None:
            Board.objects.filter(pk=mine.pk).update(lease_expires_at=now + ttl)
            mine.refresh_from_db()
            return mine
        candidates = Board.objects.select_for_update(skip_locked=True).filter(
            machine=machine, lease_holder="", locked=False
        )
        if board_id is not None:
            candidates = candidates.filter(pk=board_id)
        for label in labels:
            candidates = candidates.filter(labels__name=label)
        board = candidates.order_by("name").first()
        if board is None:
            return None
        # Compare-and-set: only a board that is still free is taken.
        taken = Board.objects.filter(pk=board.pk, lease_holder="", locked=False).update(
            lease_holder=holder, leased_at=now, lease_expires_at=now + ttl
        )
        if taken != 1:
            return None
        board.refresh_from_db()
        return board


def board_renew(*, holder: str, ttl: timedelta = DEFAULT_LEASE_TTL) -> bool:
    return (
        Board.objects.filter(lease_holder=holder).update(lease_expires_at=timezone.now() + ttl) == 1
    )


def board_release(*, holder: str) -> bool:
    return (
        Board.objects.filter(lease_holder=holder).update(
            lease_holder="", leased_at=None, lease_expires_at=None
        )
        == 1
    )
