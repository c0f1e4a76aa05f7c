from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from machines import services
from machines.models import Board, Venv
from machines.services.pool import requirements_hash
from tests.factories import make_board, make_machine, make_ready_venvs

pytestmark = pytest.mark.django_db


def test_lease_takes_a_ready_slot_and_records_the_holder():
    machine = make_machine(max_concurrent_runs=2)
    make_ready_venvs(machine, 2)
    venv = services.venv_lease(machine=machine, holder="run:1")
    assert venv is not None
    assert venv.state == Venv.State.LEASED
    assert venv.lease_holder == "run:1"
    assert venv.lease_expires_at is not None and venv.lease_expires_at > timezone.now()


def test_lease_prefers_a_slot_with_the_wanted_requirements():
    machine = make_machine(max_concurrent_runs=3)
    make_ready_venvs(machine, 2)
    wanted = requirements_hash("pytest==9.2.0\npyserial==3.5\n")
    make_ready_venvs(machine, 1, requirements_hash=wanted)
    venv = services.venv_lease(machine=machine, holder="run:1", requirements_hash=wanted)
    assert venv is not None and venv.requirements_hash == wanted


def test_requirements_hash_ignores_order_blank_lines_and_comments():
    a = requirements_hash("pytest==9.2.0\npyserial==3.5\n")
    b = requirements_hash("# tools\npyserial==3.5  # serial\n\npytest==9.2.0")
    assert a == b and len(a) == 64
    assert requirements_hash("\n# nothing\n") == ""


def test_lease_respects_the_machine_concurrency_limit():
    machine = make_machine(max_concurrent_runs=1)
    make_ready_venvs(machine, 3)
    assert services.venv_lease(machine=machine, holder="run:1") is not None
    assert services.venv_lease(machine=machine, holder="run:2") is None


def test_no_lease_on_a_machine_in_maintenance_or_disabled():
    machine = make_machine(max_concurrent_runs=2)
    make_ready_venvs(machine, 2)
    services.machine_set_maintenance(machine=machine, actor=None, source="test", on=True)
    assert services.venv_lease(machine=machine, holder="run:1") is None
    services.machine_set_maintenance(machine=machine, actor=None, source="test", on=False)
    services.machine_update(machine=machine, actor=None, source="test", enabled=False)
    assert services.venv_lease(machine=machine, holder="run:1") is None


def test_lease_is_idempotent_per_holder_and_renews():
    machine = make_machine(max_concurrent_runs=2)
    make_ready_venvs(machine, 2)
    first = services.venv_lease(machine=machine, holder="run:1", ttl=timedelta(seconds=30))
    again = services.venv_lease(machine=machine, holder="run:1", ttl=timedelta(minutes=10))
    assert first is not None and again is not None
    assert again.pk == first.pk
    assert first.lease_expires_at is not None and again.lease_expires_at is not None
    assert again.lease_expires_at > first.lease_expires_at
    assert Venv.objects.filter(state=Venv.State.LEASED).count() == 1


def test_release_marks_dirty_and_queues_a_reset(django_capture_on_commit_callbacks):
    machine = make_machine()
    make_ready_venvs(machine, 1)
    services.venv_lease(machine=machine, holder="run:1")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        venv = services.venv_release(holder="run:1")
    assert venv is not None and venv.state == Venv.State.DIRTY and venv.lease_holder == ""
    assert len(callbacks) == 1
    assert services.venv_release(holder="run:1") is None  # nothing left to release


def test_release_without_reset_returns_the_slot_ready():
    machine = make_machine()
    make_ready_venvs(machine, 1)
    services.venv_lease(machine=machine, holder="run:1")
    venv = services.venv_release(holder="run:1", reset=False)
    assert venv is not None and venv.state == Venv.State.READY


def test_renew_fails_once_the_lease_is_gone():
    machine = make_machine()
    make_ready_venvs(machine, 1)
    services.venv_lease(machine=machine, holder="run:1")
    assert services.venv_renew(holder="run:1") is True
    services.venv_release(holder="run:1", reset=False)
    assert services.venv_renew(holder="run:1") is False


def test_expired_leases_are_freed(django_capture_on_commit_callbacks):
    machine = make_machine()
    make_ready_venvs(machine, 1)
    board = make_board(machine)
    services.venv_lease(machine=machine, holder="run:1", ttl=timedelta(seconds=1))
    services.board_lease(machine=machine, holder="run:1", ttl=timedelta(seconds=1))
    later = timezone.now() + timedelta(seconds=5)
    with django_capture_on_commit_callbacks(execute=False):
        freed = services.leases_expire(now=later)
    assert freed == {"venvs": 1, "boards": 1, "stuck": 0}
    assert Venv.objects.get().state == Venv.State.DIRTY
    board.refresh_from_db()
    assert board.lease_holder == "" and board.lease_expires_at is None


def test_the_database_refuses_a_second_venv_for_one_holder():
    machine = make_machine(max_concurrent_runs=2)
    a, b = make_ready_venvs(machine, 2)
    services.venv_lease(machine=machine, holder="run:1")
    soon = timezone.now() + timedelta(minutes=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        other = b if Venv.objects.get(pk=a.pk).lease_holder else a
        Venv.objects.filter(pk=other.pk).update(
            state=Venv.State.LEASED, lease_holder="run:1", lease_expires_at=soon
        )


def test_the_database_refuses_a_lease_state_without_holder():
    machine = make_machine()
    (venv,) = make_ready_venvs(machine, 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Venv.objects.filter(pk=venv.pk).update(state=Venv.State.LEASED)


def test_board_lease_by_label_skips_locked_and_held_boards():
    machine = make_machine()
    locked = make_board(machine, "a-locked", labels=["stm32"])
    services.board_set_locked(board=locked, actor=None, source="test", locked=True, reason="probe")
    make_board(machine, "b-other", labels=["esp32"])
    wanted = make_board(machine, "c-free", labels=["stm32"])
    board = services.board_lease(machine=machine, holder="run:1", labels=["stm32"])
    assert board is not None and board.pk == wanted.pk
    assert services.board_lease(machine=machine, holder="run:2", labels=["stm32"]) is None


def test_a_board_is_held_by_one_run_and_a_run_holds_one_board():
    machine = make_machine()
    first = make_board(machine, "one")
    make_board(machine, "two")
    assert services.board_lease(machine=machine, holder="run:1", board_id=first.pk)
    assert services.board_lease(machine=machine, holder="run:2", board_id=first.pk) is None
    soon = timezone.now() + timedelta(minutes=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Board.objects.filter(name="two").update(lease_holder="run:1", lease_expires_at=soon)
    assert services.board_release(holder="run:1") is True
    assert services.board_lease(machine=machine, holder="run:2", board_id=first.pk)


def test_an_admin_lock_and_a_lease_are_different_things():
    machine = make_machine()
    board = make_board(machine)
    services.board_lease(machine=machine, holder="run:1")
    board = services.board_set_locked(board=board, actor=None, source="test", locked=True)
    board.refresh_from_db()
    # The run keeps what it holds; the lock stops the next one.
    assert board.lease_holder == "run:1" and board.locked
    services.board_release(holder="run:1")
    assert services.board_lease(machine=machine, holder="run:2") is None
