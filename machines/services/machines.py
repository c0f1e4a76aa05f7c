from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from machines import ssh
from machines.models import Machine, MachineCredential
from machines.services.audit import Actor, as_user, audit_record
from machines.services.labels import labels_get_or_create
from machines.signals import machine_answered
from machines.ssh.keys import load_private_key
from test_management_system.errors import ApplicationError, ConflictError

logger = logging.getLogger(__name__)

# Fields an update may change, besides secrets, labels and assignments.
PLAIN_FIELDS = (
    "name", "description", "connector", "hostname", "port", "os", "username", "work_dir",
    "python", "max_concurrent_runs", "enabled",
)  # fmt: skip
SECRET_FIELDS = ("password", "private_key", "passphrase")
# Changing any of these means cached connections are stale.
CONNECTION_FIELDS = frozenset({"connector", "hostname", "port", "username", "os"})


def _check_connector(connector: str, os_name: str) -> None:
    if connector != Machine.Connector.LOCAL:
        return
    if not settings.ALLOW_LOCAL_MACHINES:
        raise InvalidCredentials(
            "Machines on this host (without SSH) are disabled here: they run tests as the "
            "service's own user. Set ALLOW_LOCAL_MACHINES=true to allow them.",
            extra={"field": "connector"},
        )
    if os_name != Machine.Os.LINUX:
        raise InvalidCredentials(
            "A machine on this host must be a Linux machine.", extra={"field": "os"}
        )


class InvalidCredentials(ApplicationError):
    """Credentials that could never log in, refused before they are stored."""


def _check_credentials(
    *,
    password: str | None,
    private_key: str | None,
    passphrase: str | None,
    hostname: str,
    port: int,
) -> None:
    if private_key:
        try:
            load_private_key(private_key, passphrase, host=hostname, port=port)
        except ssh.AuthenticationFailed as exc:
            field = "passphrase" if "passphrase" in exc.message else "private_key"
            raise InvalidCredentials(exc.message, extra={"field": field}) from None
    elif passphrase:
        raise InvalidCredentials(
            "A passphrase only makes sense with a private key.", extra={"field": "passphrase"}
        )
    if not password and not private_key:
        raise InvalidCredentials(
            "Give a password or a private key (or both).", extra={"field": "password"}
        )


@transaction.atomic
def machine_create(
    *,
    actor: Actor,
    source: str,
    name: str,
    hostname: str,
    username: str,
    port: int = 22,
    os: str = Machine.Os.LINUX,
    connector: str = Machine.Connector.SSH,
    password: str | None = None,
    private_key: str | None = None,
    passphrase: str | None = None,
    labels: list[str] | tuple[str, ...] = (),
    description: str = "",
    work_dir: str = "",
    python: str = "python3",
    max_concurrent_runs: int = 1,
    enabled: bool = True,
    users: list[AbstractBaseUser] | tuple[()] = (),
    groups: list[Group] | tuple[()] = (),
) -> Machine:
    _check_connector(connector, os)
    if connector == Machine.Connector.SSH:
        _check_credentials(
            password=password, private_key=private_key, passphrase=passphrase,
            hostname=hostname, port=port,
        )  # fmt: skip
    machine = Machine(
        connector=connector,
        name=name,
        hostname=hostname,
        port=port,
        os=os,
        username=username,
        description=description,
        work_dir=work_dir,
        python=python,
        max_concurrent_runs=max_concurrent_runs,
        enabled=enabled,
    )
    machine.full_clean()
    machine.save()
    MachineCredential.objects.create(
        machine=machine,
        password=password or None,
        private_key=private_key or None,
        passphrase=passphrase or None,
        updated_by=as_user(actor),
    )
    machine.labels.set(labels_get_or_create(labels))
    machine.users.set([u.pk for u in users])
    machine.groups.set(groups)
    changes: dict[str, Any] = {f: getattr(machine, f) for f in PLAIN_FIELDS}
    changes.update(password=bool(password), private_key=bool(private_key), labels=list(labels))
    audit_record(
        actor=actor, source=source, action="machine.create", target=machine, changes=changes
    )
    return machine


@transaction.atomic
def machine_update(
    *,
    machine: Machine,
    actor: Actor,
    source: str,
    labels: list[str] | None = None,
    users: list[AbstractBaseUser] | None = None,
    groups: list[Group] | None = None,
    **fields: Any,
) -> Machine:
    """Changes only the fields given. Secrets: absent or None keeps, "" clears, a value sets."""
    unknown = set(fields) - set(PLAIN_FIELDS) - set(SECRET_FIELDS)
    if unknown:
        raise ApplicationError(f"Cannot change {', '.join(sorted(unknown))} here.")
    machine = Machine.objects.select_for_update().get(pk=machine.pk)
    changes: dict[str, Any] = {}
    for name in PLAIN_FIELDS:
        if name in fields and fields[name] != getattr(machine, name):
            changes[name] = fields[name]
            setattr(machine, name, fields[name])
    machine.full_clean()
    if {"connector", "os"} & set(changes):
        _check_connector(machine.connector, machine.os)
    if changes:
        machine.save(update_fields=[*changes, "updated_at"])

    credential, _ = MachineCredential.objects.select_for_update().get_or_create(machine=machine)
    secret_changes = {k: fields[k] for k in SECRET_FIELDS if fields.get(k) is not None}
    if secret_changes and machine.connector == Machine.Connector.SSH:
        merged = {k: secret_changes.get(k, getattr(credential, k)) or None for k in SECRET_FIELDS}
        _check_credentials(**merged, hostname=machine.hostname, port=machine.port)
        for key, value in secret_changes.items():
            setattr(credential, key, value or None)
        changes.update(secret_changes)
    if secret_changes or CONNECTION_FIELDS & set(changes):
        credential.version = F("version") + 1
        credential.updated_by = as_user(actor)
        credential.save()
        ssh.drop_connection(machine.pk)
    if labels is not None:
        machine.labels.set(labels_get_or_create(labels))
        changes["labels"] = labels
    if users is not None:
        machine.users.set([u.pk for u in users])
        changes["users"] = [u.get_username() for u in users]
    if groups is not None:
        machine.groups.set(groups)
        changes["groups"] = [g.name for g in groups]
    if changes:
        audit_record(
            actor=actor, source=source, action="machine.update", target=machine, changes=changes
        )
    return machine


@transaction.atomic
def machine_delete(*, machine: Machine, actor: Actor, source: str) -> None:
    if (
        machine.venvs.filter(state="leased").exists()
        or machine.boards.exclude(lease_holder="").exists()
    ):
        raise ConflictError(
            f"Machine {machine.name} has runs holding its venvs or boards; wait for them to "
            "finish or cancel them first."
        )
    audit_record(actor=actor, source=source, action="machine.delete", target=machine)
    try:
        with transaction.atomic():
            machine.delete()
    except IntegrityError:
        # Runs that asked for this machine by name (not by label) keep it in their history:
        # the database refuses a run that names neither a machine nor a label.
        raise ConflictError(
            f"Machine {machine.name} is named by runs in the history; disable it instead of "
            "deleting it."
        ) from None
    ssh.drop_connection(machine.pk)


@transaction.atomic
def machine_set_maintenance(
    *, machine: Machine, actor: Actor, source: str, on: bool, reason: str = ""
) -> Machine:
    machine.maintenance = on
    machine.maintenance_reason = reason if on else ""
    machine.save(update_fields=["maintenance", "maintenance_reason", "updated_at"])
    audit_record(
        actor=actor,
        source=source,
        action="machine.maintenance_on" if on else "machine.maintenance_off",
        target=machine,
        changes={"reason": reason} if on else {},
    )
    return machine


# --- SSH --------------------------------------------------------------------------------------


def _spec(machine: Machine, credential: MachineCredential | None = None) -> ssh.ConnectionSpec:
    if credential is None:
        credential = MachineCredential.objects.filter(machine=machine).first()
    host_key = (
        ssh.HostKey(
            key_type=machine.host_key_type,
            base64=machine.host_key_base64,
            fingerprint=machine.host_key_fingerprint,
        )
        if machine.host_key_pinned
        else None
    )
    return ssh.ConnectionSpec(
        hostname=machine.hostname,
        port=machine.port,
        username=machine.username,
        password=credential.password if credential else None,
        private_key=credential.private_key if credential else None,
        passphrase=credential.passphrase if credential else None,
        host_key=host_key,
        os_name=machine.os,
    )


def machine_connection(*, machine: Machine) -> ssh.SSHConnection:
    """This worker process's connection to the machine (cached; re-made after any change)."""
    if machine.connector == Machine.Connector.LOCAL:
        from machines.local import local_connection

        if not settings.ALLOW_LOCAL_MACHINES:
            raise ssh.SSHError(
                f"Machine {machine.name} runs on this host, which ALLOW_LOCAL_MACHINES forbids.",
                host="localhost", port=0,
            )  # fmt: skip
        # Same methods and errors as an SSH connection.
        return local_connection()  # type: ignore[return-value]
    credential = MachineCredential.objects.filter(machine=machine).first()
    version = credential.version if credential else 0
    return ssh.get_connection(
        (machine.pk, version, machine.host_key_fingerprint), _spec(machine, credential)
    )


def _needs_ssh(machine: Machine) -> None:
    if machine.connector != Machine.Connector.SSH:
        raise ApplicationError(f"Machine {machine.name} runs on this host: it has no host key.")


def machine_fetch_host_key(*, machine: Machine) -> ssh.HostKey:
    """The key the machine offers now, to show an admin before they trust it. Writes nothing."""
    _needs_ssh(machine)
    return ssh.fetch_host_key(machine.hostname, machine.port)


@transaction.atomic
def machine_trust_host_key(
    *, machine: Machine, actor: Actor, source: str, fingerprint: str
) -> Machine:
    """Pins the machine's host key, if it is still the one the admin saw (``fingerprint``)."""
    _needs_ssh(machine)
    offered = ssh.fetch_host_key(machine.hostname, machine.port)
    if offered.fingerprint != fingerprint.strip():
        raise ConflictError(
            f"{machine.hostname}:{machine.port} now offers host key {offered.fingerprint}, not "
            f"the {fingerprint.strip()} you confirmed. Nothing was trusted; check the machine "
            "and confirm again.",
            extra={"offered_fingerprint": offered.fingerprint},
        )
    previous = machine.host_key_fingerprint
    machine.host_key_type = offered.key_type
    machine.host_key_base64 = offered.base64
    machine.host_key_fingerprint = offered.fingerprint
    machine.host_key_trusted_by = as_user(actor)
    machine.host_key_trusted_at = timezone.now()
    machine.save(
        update_fields=[
            "host_key_type", "host_key_base64", "host_key_fingerprint", "host_key_trusted_by",
            "host_key_trusted_at", "updated_at",
        ]
    )  # fmt: skip
    MachineCredential.objects.filter(machine=machine).update(version=F("version") + 1)
    ssh.drop_connection(machine.pk)
    audit_record(
        actor=actor,
        source=source,
        action="machine.trust_host_key",
        target=machine,
        changes={"fingerprint": offered.fingerprint, "previous_fingerprint": previous},
    )
    return machine


@dataclass
class MachineCheckResult:
    ok: bool
    status: str
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


# One fixed script, no interpolation: the configured Python arrives as an environment variable.
POSIX_FACTS_SCRIPT = r"""
echo "home=$HOME"
echo "os=$(uname -s)"
echo "kernel=$(uname -r)"
echo "arch=$(uname -m)"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os_version=$PRETTY_NAME"; fi
for p in "$TMS_PYTHON" python3 python3.9 python3.10 python3.11 python3.12 python3.13 python3.14; do
  path=$(command -v "$p" 2>/dev/null) || continue
  v=$("$path" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || continue
  echo "python=$p|$path|$v"
done
if command -v uv >/dev/null 2>&1; then echo "uv=$(uv --version 2>/dev/null)"; fi
echo "disk_free_kb=$(df -Pk "$HOME" 2>/dev/null | awk 'NR==2 {print $4}')"
for d in /dev/serial/by-id/* /dev/ttyUSB* /dev/ttyACM*; do
  [ -e "$d" ] && echo "serial=$d"
done
true
"""

WINDOWS_FACTS_SCRIPT = r"""
$ErrorActionPreference = 'SilentlyContinue'
"home=$env:USERPROFILE"
"os=Windows"
"os_version=" + (Get-CimInstance Win32_OperatingSystem).Caption
"arch=$env:PROCESSOR_ARCHITECTURE"
foreach ($p in @($env:TMS_PYTHON, 'python', 'python3', 'py')) {
  $c = Get-Command $p -ErrorAction SilentlyContinue | Select-Object -First 1
  if ($c) { $v = & $c.Source -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'
            if ($LASTEXITCODE -eq 0) { "python=$p|$($c.Source)|$v" } }
}
$uv = Get-Command uv -ErrorAction SilentlyContinue
if ($uv) { "uv=" + (& uv --version) }
$drive = (Get-Item $env:USERPROFILE).PSDrive
"disk_free_kb=" + [math]::Floor($drive.Free / 1024)
foreach ($port in [System.IO.Ports.SerialPort]::GetPortNames()) { "serial=$port" }
"""

_LINE = re.compile(r"^(?P<key>[a-z_]+)=(?P<value>.*)$")


def parse_facts(output: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"pythons": [], "serial_ports": []}
    for line in output.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        key, value = match["key"], match["value"].strip()
        if key == "python":
            name, path, version = [*value.split("|"), "", ""][:3]
            if path not in {p["path"] for p in facts["pythons"]}:
                facts["pythons"].append({"name": name, "path": path, "version": version})
        elif key == "serial":
            facts["serial_ports"].append(value)
        elif key == "disk_free_kb":
            facts["disk_free_mb"] = int(value) // 1024 if value.isdigit() else None
        else:
            facts[key] = value
    facts["uv_present"] = "uv" in facts
    return facts


def facts_command(machine: Machine) -> ssh.Command:
    if machine.os == Machine.Os.WINDOWS:
        return ssh.Command.shell_raw(WINDOWS_FACTS_SCRIPT).env({"TMS_PYTHON": machine.python})
    return ssh.Command("sh", "-c", POSIX_FACTS_SCRIPT).env({"TMS_PYTHON": machine.python})


def machine_check(
    *, machine: Machine, actor: Actor = None, source: str = "system"
) -> MachineCheckResult:
    """Connects, checks the login is quiet, reads the facts; records status and what went wrong."""
    warnings: list[str] = []
    try:
        conn = machine_connection(machine=machine)
        # Runs in the login shell as-is (sh or cmd.exe): anything printed comes from its profile.
        quiet = conn.run("exit 0", timeout=30)
        if quiet.stdout.strip() or quiet.stderr.strip():
            warnings.append(
                "Logging in prints text (from a login profile such as .bashrc): this breaks file "
                "transfers. Make the profile quiet for non-interactive shells. It printed: "
                + (quiet.stdout + quiet.stderr).strip()[:200]
            )
        result = conn.run(facts_command(machine), timeout=60)
        facts = parse_facts(result.stdout)
    except ssh.SSHError as exc:
        previous = machine.status
        Machine.objects.filter(pk=machine.pk).update(
            status=Machine.Status.OFFLINE, last_checked_at=timezone.now(), last_error=exc.message
        )
        machine.refresh_from_db()
        _audit_check(machine, previous, actor, source, {"ok": False, "error": exc.message})
        return MachineCheckResult(ok=False, status=Machine.Status.OFFLINE, message=exc.message)

    if not any(p["name"] == machine.python for p in facts["pythons"]):
        warnings.append(
            f"The configured Python {machine.python!r} was not found on the machine; "
            "venvs cannot be provisioned until it is installed or the setting is changed."
        )
    facts["warnings"] = warnings
    now = timezone.now()
    previous = machine.status
    Machine.objects.filter(pk=machine.pk).update(
        status=Machine.Status.ONLINE, last_checked_at=now, last_seen_at=now,
        last_error="; ".join(warnings), facts=facts,
    )  # fmt: skip
    machine.refresh_from_db()
    _audit_check(machine, previous, actor, source, {"ok": True, "warnings": warnings})
    _machine_answered(machine)
    return MachineCheckResult(
        ok=True, status=Machine.Status.ONLINE, message="Connected.", warnings=warnings, facts=facts
    )


def _machine_answered(machine: Machine) -> None:
    """The machine answers (again): slots whose reset failed while it was away are retried, and
    the app that runs tests stops what runs given up meanwhile left running there."""
    from machines.services.pool import venv_resets_retry

    venv_resets_retry(machine=machine)
    for _receiver, response in machine_answered.send_robust(sender=Machine, machine_id=machine.pk):
        if isinstance(response, Exception):
            logger.error("After machine %s answered again: %r", machine.name, response)


def _audit_check(
    machine: Machine, previous: str, actor: Actor, source: str, changes: dict[str, Any]
) -> None:
    # A person's check is always recorded; the periodic one only when the status changes, so
    # that the audit trail is not buried under routine checks.
    if (actor is not None and actor.is_authenticated) or previous != machine.status:
        changes["status"] = machine.status
        audit_record(
            actor=actor, source=source, action="machine.check", target=machine, changes=changes
        )
