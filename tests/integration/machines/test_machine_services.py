"""Machine check, host-key trust and venv provisioning against a real sshd on loopback."""

from __future__ import annotations

import secrets
from io import StringIO

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.core.management import call_command

from machines import services, ssh
from machines.models import AuditEntry, Machine, Venv
from machines.services.pool import requirements_hash, venv_python
from machines.ssh.keys import HostKey
from tests.factories import make_machine, make_user
from tests.sshd import SSHD

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def machine(sshd: SSHD) -> Machine:
    if not sshd.running:
        sshd.start()
    return make_machine(
        f"loop-{secrets.token_hex(3)}",
        hostname=sshd.host,
        port=sshd.port,
        username=sshd.username,
        password=sshd.password,
        python="python3",
        work_dir=f"{sshd.home}/tms-{secrets.token_hex(4)}",
        max_concurrent_runs=2,
    )


@pytest.fixture
def trusted(machine: Machine, sshd: SSHD) -> Machine:
    offered = services.machine_fetch_host_key(machine=machine)
    return services.machine_trust_host_key(
        machine=machine, actor=None, source="test", fingerprint=offered.fingerprint
    )


def test_first_contact_needs_an_explicit_trust(machine, sshd):
    result = services.machine_check(machine=machine)
    assert not result.ok
    assert "trust" in result.message.lower()
    assert sshd.host_key.fingerprint in result.message
    machine.refresh_from_db()
    assert machine.status == Machine.Status.OFFLINE and machine.host_key_fingerprint == ""


def test_trust_pins_exactly_the_key_the_admin_saw(machine, sshd):
    admin = make_user("keeper", admin=True)
    offered = services.machine_fetch_host_key(machine=machine)
    assert offered.fingerprint == sshd.host_key.fingerprint
    services.machine_trust_host_key(
        machine=machine, actor=admin, source="test", fingerprint=offered.fingerprint
    )
    machine.refresh_from_db()
    assert machine.host_key_fingerprint == sshd.host_key.fingerprint
    assert machine.host_key_base64 == sshd.host_key.base64
    assert machine.host_key_trusted_by == admin and machine.host_key_trusted_at is not None
    entry = AuditEntry.objects.get(action="machine.trust_host_key")
    assert entry.changes["fingerprint"] == sshd.host_key.fingerprint


def test_trust_is_refused_when_the_key_changed_since_it_was_shown(machine):
    from test_management_system.errors import ConflictError

    with pytest.raises(ConflictError, match="Nothing was trusted"):
        services.machine_trust_host_key(
            machine=machine, actor=None, source="test", fingerprint="SHA256:" + "B" * 43
        )
    machine.refresh_from_db()
    assert machine.host_key_fingerprint == ""


def test_a_changed_host_key_is_refused_naming_both_fingerprints(trusted, sshd):
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    line = other.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pinned = HostKey.from_openssh_line(line.decode())
    # As if the machine had been reinstalled (or impersonated) since its key was trusted.
    Machine.objects.filter(pk=trusted.pk).update(
        host_key_type=pinned.key_type,
        host_key_base64=pinned.base64,
        host_key_fingerprint=pinned.fingerprint,
    )
    trusted.refresh_from_db()
    result = services.machine_check(machine=trusted)
    assert not result.ok
    assert sshd.host_key.fingerprint in result.message
    assert pinned.fingerprint in result.message
    assert Machine.objects.get(pk=trusted.pk).status == Machine.Status.OFFLINE


def test_check_reads_the_facts_of_the_machine(trusted, sshd):
    result = services.machine_check(machine=trusted)
    assert result.ok, result.message
    trusted.refresh_from_db()
    facts = trusted.facts
    assert trusted.status == Machine.Status.ONLINE and trusted.last_seen_at is not None
    assert facts["home"] == str(sshd.home)
    assert facts["os"] == "Linux"
    assert facts["os_version"]
    assert any(p["name"] == "python3" and p["version"].startswith("3.") for p in facts["pythons"])
    assert isinstance(facts["disk_free_mb"], int) and facts["disk_free_mb"] > 0
    assert isinstance(facts["serial_ports"], list)
    assert facts["uv_present"] in (True, False)


def test_check_command_and_periodic_task_path_report_offline(trusted, sshd):
    out = StringIO()
    call_command("check_machines", trusted.name, stdout=out)
    assert "online" in out.getvalue()
    Machine.objects.filter(pk=trusted.pk).update(port=1)
    with pytest.raises(Exception, match="could not be checked"):
        call_command("check_machines", trusted.name, stdout=out)
    trusted.refresh_from_db()
    assert trusted.status == Machine.Status.OFFLINE
    assert "127.0.0.1:1" in trusted.last_error


def test_wrong_password_is_an_offline_machine_with_a_clear_reason(trusted):
    services.machine_update(machine=trusted, actor=None, source="test", password="wrong-pw")
    result = services.machine_check(machine=trusted)
    assert not result.ok
    assert "wrong-pw" not in result.message
    assert "authentication" in result.message.lower() or "password" in result.message.lower()


def test_pool_is_provisioned_with_real_venvs_and_leased(trusted, sshd):
    services.machine_check(machine=trusted)
    trusted.refresh_from_db()
    venvs = services.venv_pool_ensure(machine=trusted, size=2, actor=None, source="test")
    assert [v.state for v in venvs] == [Venv.State.READY, Venv.State.READY], [
        v.last_error for v in venvs
    ]
    assert all(v.python_version.startswith("3.") for v in venvs)
    conn = services.machine_connection(machine=trusted)
    for venv in venvs:
        out = conn.run(ssh.Command(venv_python(venv), "-c", "import sys; print(sys.prefix)"))
        assert out.stdout.strip() == venv.path

    lease = services.venv_lease(machine=trusted, holder="run:42")
    assert lease is not None
    # Requirements already satisfied in a fresh venv: synced without the network.
    synced = services.venv_sync_requirements(venv=lease, holder="run:42", requirements="pip\n")
    assert synced.requirements_hash == requirements_hash("pip")
    remote_requirements = conn.get(lease.path + ".requirements.txt").decode()
    assert remote_requirements == "pip\n"

    # Released untouched: the reset sees the same packages and keeps the slot as it is.
    services.venv_release(holder="run:42", reset=False)
    Venv.objects.filter(pk=lease.pk).update(state=Venv.State.DIRTY)
    reset = services.venv_reset(venv=Venv.objects.get(pk=lease.pk))
    assert reset.state == Venv.State.READY and reset.requirements_hash == requirements_hash("pip")

    # A package the run installed is gone after the reset, which rebuilds the venv.
    site = conn.run(
        ssh.Command(
            venv_python(lease), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        )
    ).stdout.strip()
    conn.run(ssh.Command("mkdir", "-p", f"{site}/leftover-1.0.dist-info"))
    conn.put(
        b"Metadata-Version: 2.1\nName: leftover\nVersion: 1.0\n",
        f"{site}/leftover-1.0.dist-info/METADATA",
    )
    assert (
        "leftover==1.0" in conn.run(ssh.Command(venv_python(lease), "-m", "pip", "freeze")).stdout
    )
    Venv.objects.filter(pk=lease.pk).update(state=Venv.State.DIRTY)
    reset = services.venv_reset(venv=Venv.objects.get(pk=lease.pk))
    assert reset.state == Venv.State.READY
    assert reset.requirements_hash == requirements_hash("pip")  # kept warm
    assert "leftover" not in conn.run(ssh.Command(venv_python(lease), "-m", "pip", "freeze")).stdout


def test_repeated_provisioning_failures_make_a_slot_broken(trusted):
    trusted = services.machine_update(
        machine=trusted, actor=None, source="test", python="python-nowhere"
    )
    venvs = services.venv_pool_ensure(machine=trusted, size=1, actor=None, source="test")
    venv = venvs[0]
    assert venv.state == Venv.State.DIRTY and venv.failure_count == 1
    assert venv.last_error
    for _ in range(2):
        venv = services.venv_provision(venv=venv)
    assert venv.state == Venv.State.BROKEN and venv.failure_count == 3
    assert AuditEntry.objects.filter(action="venv.broken", target_id=venv.pk).exists()
