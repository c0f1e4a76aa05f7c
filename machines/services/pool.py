"""The pool of virtualenvs on each machine: provision, lease, renew, release, reset, expire.

Leases are short database transactions; everything that talks to a machine runs outside them,
so no row lock is ever held across a network call.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Case, F, IntegerField, Value, When
from django.utils import timezone

from machines import ssh
from machines.models import Board, Machine, Venv
from machines.services.audit import Actor, audit_record
from machines.services.machines import machine_connection
from test_management_system.errors import ApplicationError, ConflictError

logger = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = timedelta(minutes=5)
# After this many failed provisionings in a row a slot is BROKEN and left alone until an admin
# provisions the pool again.
MAX_FAILURES = 3
OUTPUT_LIMIT = 20_000
PROVISION_TIMEOUT = 900.0


def requirements_hash(requirements: str) -> str:
    """Hash of the requirement lines, ignoring blank lines, comments and order."""
    lines = sorted({line.split("#", 1)[0].strip() for line in requirements.splitlines()} - {""})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest() if lines else ""


def _sep(machine: Machine) -> str:
    return "\\" if machine.os == Machine.Os.WINDOWS else "/"


def venv_dir(machine: Machine) -> str:
    return machine.effective_work_dir + _sep(machine) + "venvs"


def venv_python(venv: Venv) -> str:
    if venv.machine.os == Machine.Os.WINDOWS:
        return venv.path + "\\Scripts\\python.exe"
    return venv.path + "/bin/python"


def _requirements_file(venv: Venv) -> str:
    return venv.path + ".requirements.txt"


def _freeze_file(venv: Venv) -> str:
    return venv.path + ".freeze"


def _freeze(conn: ssh.SSHConnection, venv: Venv) -> bytes:
    if venv.machine.facts.get("uv_present"):
        # Same listing (pip, setuptools included) in tens of ms instead of the second or
        # more that starting pip takes; it runs on every reset and every provisioning.
        command = ssh.Command("uv", "pip", "freeze", "--python", venv_python(venv))
    else:
        command = ssh.Command(
            venv_python(venv), "-m", "pip", "freeze", "--all", "--disable-pip-version-check"
        )
    return conn.run(command, timeout=120).stdout.encode()


def _record_freeze(conn: ssh.SSHConnection, venv: Venv) -> None:
    """What a clean slot holds; a reset that finds the same needs no rebuild."""
    conn.put(_freeze(conn, venv), _freeze_file(venv))


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_LIMIT else "[...]\n" + text[-OUTPUT_LIMIT:]


# --- Leases -----------------------------------------------------------------------------------


def venv_lease(
    *,
    machine: Machine,
    holder: str,
    requirements_hash: str = "",
    ttl: timedelta = DEFAULT_LEASE_TTL,
) -> Venv | None:
    """A READY slot on ``machine`` leased to ``holder``, or None if none is free now.

    Prefers a slot already synced to ``requirements_hash``, then the least recently used one.
    Idempotent: a holder that already has a lease gets it back (renewed). The machine row is
    locked for the few milliseconds of the decision so ``max_concurrent_runs`` holds exactly;
    the database constraints make a double lease impossible even if this code were wrong.
    """
    if not holder:
        raise ApplicationError("A lease needs a holder.")
    now = timezone.now()
    with transaction.atomic():
        locked = Machine.objects.select_for_update().get(pk=machine.pk)
        mine = Venv.objects.filter(lease_holder=holder).first()
        if mine is not None:
            Venv.objects.filter(pk=mine.pk).update(lease_expires_at=now + ttl)
            mine.refresh_from_db()
            return mine
        if not locked.is_usable:
            return None
        if Venv.objects.filter(machine=locked, state=Venv.State.LEASED).count() >= (
            locked.max_concurrent_runs
        ):
            return None
        candidate = (
            Venv.objects.select_for_update(skip_locked=True)
            .filter(machine=locked, state=Venv.State.READY)
            .order_by(
                Case(
                    When(requirements_hash=requirements_hash, then=Value(0)),
                    default=Value(1),
                    output_field=IntegerField(),
                ),
                F("last_used_at").asc(nulls_first=True),
                "slot",
            )
            .first()
        )
        if candidate is None:
            return None
        taken = Venv.objects.filter(pk=candidate.pk, state=Venv.State.READY).update(
            state=Venv.State.LEASED,
            lease_holder=holder,
            leased_at=now,
            lease_expires_at=now + ttl,
            last_used_at=now,
        )
        if taken != 1:
            return None
        candidate.refresh_from_db()
        return candidate


def venv_renew(*, holder: str, ttl: timedelta = DEFAULT_LEASE_TTL) -> bool:
    """Extends the holder's lease; False if it has none any more (it expired and was taken)."""
    return (
        Venv.objects.filter(lease_holder=holder, state=Venv.State.LEASED).update(
            lease_expires_at=timezone.now() + ttl
        )
        == 1
    )


def venv_release(*, holder: str, reset: bool = True) -> Venv | None:
    """Gives the holder's slot back: DIRTY and queued for a reset, or READY if ``reset`` is
    False (the holder knows it changed nothing). No lease: nothing to do, returns None."""
    with transaction.atomic():
        venv = Venv.objects.select_for_update().filter(lease_holder=holder).first()
        if venv is None:
            return None
        venv.state = Venv.State.DIRTY if reset else Venv.State.READY
        venv.lease_holder = ""
        venv.leased_at = None
        venv.lease_expires_at = None
        venv.save(
            update_fields=["state", "lease_holder", "leased_at", "lease_expires_at", "updated_at"]
        )
        if reset:
            _queue_reset(venv.pk)
    return venv


def _queue_reset(venv_id: int) -> None:
    from machines.tasks import venv_reset_task

    transaction.on_commit(lambda: venv_reset_task.delay(venv_id))


def venv_resets_retry(*, machine: Machine) -> list[int]:
    """Queues another reset of the machine's slots whose last reset failed (DIRTY, with the
    error recorded): called when the machine answers again, so that a pool left dirty by an
    outage heals without an admin. BROKEN slots (failed ``MAX_FAILURES`` times) stay for one."""
    ids = list(
        Venv.objects.filter(machine=machine, state=Venv.State.DIRTY)
        .exclude(last_error="")
        .values_list("pk", flat=True)
    )
    for venv_id in ids:
        _queue_reset(venv_id)
    return ids


def leases_expire(*, now: datetime | None = None) -> dict[str, int]:
    """Frees every venv and board lease past its expiry (their holder stopped renewing)."""
    now = now or timezone.now()
    with transaction.atomic():
        stale = list(
            Venv.objects.select_for_update(skip_locked=True).filter(
                state=Venv.State.LEASED, lease_expires_at__lt=now
            )
        )
        for venv in stale:
            logger.warning("Lease of %s by %s expired; freeing it", venv, venv.lease_holder)
            audit_record(
                actor=None, source="system", action="venv.lease_expired", target=venv,
                changes={"holder": venv.lease_holder},
            )  # fmt: skip
            venv.state = Venv.State.DIRTY
            venv.lease_holder = ""
            venv.leased_at = venv.lease_expires_at = None
            venv.save(update_fields=["state", "lease_holder", "leased_at", "lease_expires_at"])
            _queue_reset(venv.pk)
        boards = list(
            Board.objects.select_for_update(skip_locked=True).filter(lease_expires_at__lt=now)
        )
        for board in boards:
            audit_record(
                actor=None, source="system", action="board.lease_expired", target=board,
                changes={"holder": board.lease_holder},
            )  # fmt: skip
        Board.objects.filter(pk__in=[b.pk for b in boards]).update(
            lease_holder="", leased_at=None, lease_expires_at=None
        )
        # A slot whose provisioning worker died stays PROVISIONING: give it back to a reset.
        stuck = list(
            Venv.objects.select_for_update(skip_locked=True)
            .filter(
                state=Venv.State.PROVISIONING,
                updated_at__lt=now - timedelta(seconds=PROVISION_TIMEOUT * 2),
            )
            .values_list("pk", flat=True)
        )
        Venv.objects.filter(pk__in=stuck).update(
            state=Venv.State.DIRTY, last_error="Provisioning never finished (worker lost)."
        )
        for venv_id in stuck:
            _queue_reset(venv_id)
    return {"venvs": len(stale), "boards": len(boards), "stuck": len(stuck)}


# --- Provisioning -----------------------------------------------------------------------------


def venv_pool_ensure(
    *, machine: Machine, size: int, python: str | None = None, actor: Actor, source: str
) -> list[Venv]:
    """Makes the machine's pool ``size`` slots big and provisions every slot that is not READY
    or LEASED (BROKEN ones get another chance: an admin asked for it)."""
    if not 1 <= size <= 64:
        raise ApplicationError("A pool has 1 to 64 slots.", extra={"field": "size"})
    python = python or machine.python
    base = venv_dir(machine)
    with transaction.atomic():
        existing = set(Venv.objects.filter(machine=machine).values_list("slot", flat=True))
        for slot in range(size):
            if slot not in existing:
                Venv.objects.create(
                    machine=machine,
                    slot=slot,
                    path=f"{base}{_sep(machine)}slot-{slot}",
                    python=python,
                    state=Venv.State.PROVISIONING,
                )
        Venv.objects.filter(machine=machine, state=Venv.State.BROKEN).update(failure_count=0)
        audit_record(
            actor=actor, source=source, action="pool.ensure", target=machine,
            changes={"size": size, "python": python},
        )  # fmt: skip
    todo = Venv.objects.filter(machine=machine, slot__lt=size).exclude(
        state__in=[Venv.State.READY, Venv.State.LEASED]
    )
    for venv in todo:
        venv_provision(venv=venv)
    return list(Venv.objects.filter(machine=machine).order_by("slot"))


def _install_command(machine: Machine, venv: Venv, requirements_path: str) -> ssh.Command:
    if machine.facts.get("uv_present"):
        return ssh.Command(
            "uv", "pip", "install", "--python", venv_python(venv), "-r", requirements_path
        ).env(_uv_env(machine))
    return ssh.Command(
        venv_python(venv), "-m", "pip", "install", "--disable-pip-version-check",
        "--no-input", "-r", requirements_path,
    )  # fmt: skip


def _uv_env(machine: Machine) -> dict[str, str]:
    # The cache on the same filesystem as the venvs, or uv copies instead of hard-linking.
    return {"UV_CACHE_DIR": machine.effective_work_dir + _sep(machine) + "uv-cache"}


def venv_provision(*, venv: Venv) -> Venv:
    """(Re)creates the venv on its machine, clean; reinstalls its requirements if it had any.
    READY on success; on failure DIRTY, or BROKEN after ``MAX_FAILURES`` in a row."""
    claimed = Venv.objects.filter(
        pk=venv.pk,
        state__in=[Venv.State.PROVISIONING, Venv.State.DIRTY, Venv.State.BROKEN],
    ).update(state=Venv.State.PROVISIONING)
    venv.refresh_from_db()
    if not claimed:
        return venv  # leased or READY meanwhile: nothing to do
    machine = venv.machine
    output: list[str] = []
    try:
        conn = machine_connection(machine=machine)
        parent = venv.path.rsplit(_sep(machine), 1)[0]
        make_dir = "import os, sys; os.makedirs(sys.argv[1], exist_ok=True)"
        output.append(conn.run(ssh.Command(venv.python, "-c", make_dir, parent), timeout=60).stdout)
        if machine.facts.get("uv_present"):
            create = ssh.Command(
                "uv", "venv", "--clear", "--seed", "--python", venv.python, venv.path
            ).env(_uv_env(machine))
        else:
            create = ssh.Command(venv.python, "-m", "venv", "--clear", venv.path)
        result = conn.run(create, timeout=PROVISION_TIMEOUT)
        output += [result.stdout, result.stderr]
        version = conn.run(
            ssh.Command(
                venv_python(venv), "-c", "import platform; print(platform.python_version())"
            ),
            timeout=60,
        ).stdout.strip()
        if venv.requirements_hash:
            result = conn.run(
                _install_command(machine, venv, _requirements_file(venv)), timeout=PROVISION_TIMEOUT
            )
            output += [result.stdout, result.stderr]
        _record_freeze(conn, venv)
    except Exception as exc:  # any failure is recorded on the slot, never lost
        message = exc.message if isinstance(exc, ssh.SSHError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ssh.SSHError):
            logger.exception("Provisioning %s failed unexpectedly", venv)
        failures = venv.failure_count + 1
        state = Venv.State.BROKEN if failures >= MAX_FAILURES else Venv.State.DIRTY
        Venv.objects.filter(pk=venv.pk).update(
            state=state, failure_count=failures, last_error=message,
            last_output=_tail("".join(output)),
        )  # fmt: skip
        logger.warning("Provisioning %s failed (%d in a row): %s", venv, failures, message)
        if state == Venv.State.BROKEN:
            audit_record(
                actor=None, source="system", action="venv.broken", target=venv,
                changes={"error": message, "failures": failures},
            )  # fmt: skip
    else:
        Venv.objects.filter(pk=venv.pk).update(
            state=Venv.State.READY, python_version=version, failure_count=0, last_error="",
            last_output=_tail("".join(output)),
        )  # fmt: skip
    venv.refresh_from_db()
    return venv


def venv_pool_request(
    *, machine: Machine, size: int, python: str | None = None, actor: Actor, source: str
) -> None:
    """Queues provisioning of the machine's pool (``venv_pool_ensure`` in a worker)."""
    if not 1 <= size <= 64:
        raise ApplicationError("A pool has 1 to 64 slots.", extra={"field": "size"})
    audit_record(
        actor=actor, source=source, action="pool.requested", target=machine,
        changes={"size": size, "python": python or machine.python},
    )  # fmt: skip
    from machines.tasks import venv_pool_ensure_task

    transaction.on_commit(lambda: venv_pool_ensure_task.delay(machine.pk, size, python))


@transaction.atomic
def venv_reset_request(*, venv: Venv, actor: Actor, source: str) -> Venv:
    """Marks a slot that is not leased DIRTY and queues its reset."""
    venv = Venv.objects.select_for_update().get(pk=venv.pk)
    if venv.state == Venv.State.LEASED:
        raise ConflictError(f"Venv {venv} is leased by {venv.lease_holder}; it resets when freed.")
    venv.state = Venv.State.DIRTY
    venv.save(update_fields=["state", "updated_at"])
    audit_record(actor=actor, source=source, action="venv.reset", target=venv)
    _queue_reset(venv.pk)
    return venv


def venv_reset(*, venv: Venv) -> Venv:
    """Returns a DIRTY slot to READY. If its installed packages are exactly what they were
    when it was last made clean (``pip freeze``), it is READY at once; otherwise it is
    recreated clean, with the requirements it had. (Run workspaces live outside the venv.)"""
    if venv.state == Venv.State.DIRTY:
        try:
            conn = machine_connection(machine=venv.machine)
            clean = conn.get(_freeze_file(venv))
            if _freeze(conn, venv) == clean:
                Venv.objects.filter(pk=venv.pk, state=Venv.State.DIRTY).update(
                    state=Venv.State.READY, last_error=""
                )
                venv.refresh_from_db()
                return venv
        except ssh.SSHError:
            pass  # no snapshot or no answer: rebuild
    return venv_provision(venv=venv)


def venv_sync_requirements(*, venv: Venv, holder: str, requirements: str) -> Venv:
    """Installs ``requirements`` into the holder's leased venv unless it already has them."""
    wanted = requirements_hash(requirements)
    venv.refresh_from_db()
    if venv.lease_holder != holder:
        raise ApplicationError(f"Venv {venv} is not leased by {holder}.")
    if venv.requirements_hash == wanted:
        return venv
    machine = venv.machine
    conn = machine_connection(machine=machine)
    if wanted:
        conn.put(requirements.encode(), _requirements_file(venv))
        result = conn.run(
            _install_command(machine, venv, _requirements_file(venv)), timeout=PROVISION_TIMEOUT
        )
        output = result.stdout + result.stderr
    else:
        # Fewer requirements than installed: only a clean venv is honest.
        conn.run(ssh.Command(venv.python, "-m", "venv", "--clear", venv.path), timeout=300)
        output = ""
    _record_freeze(conn, venv)
    Venv.objects.filter(pk=venv.pk, lease_holder=holder).update(
        requirements_hash=wanted, last_output=_tail(output)
    )
    venv.refresh_from_db()
    return venv
