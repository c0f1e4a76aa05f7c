import pytest

from machines.models import AuditEntry, Machine, MachineCredential
from tests.factories import PASSWORD, make_machine, make_user, private_key_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(make_user("boss", admin=True))
    return client


def _form(machine: Machine, **changes) -> dict:
    data = {
        "name": machine.name, "description": machine.description, "connector": "ssh",
        "hostname": machine.hostname,
        "port": machine.port, "os": machine.os, "username": machine.username,
        "work_dir": machine.work_dir, "python": machine.python,
        "max_concurrent_runs": machine.max_concurrent_runs, "enabled": "on",
        "password": "", "private_key": "", "passphrase": "",
    }  # fmt: skip
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_change_page_never_renders_a_stored_secret(admin_client):
    key = private_key_text("pp-admin")
    machine = make_machine(private_key=key, passphrase="pp-admin")
    page = admin_client.get(f"/admin/machines/machine/{machine.pk}/change/").content.decode()
    assert PASSWORD not in page
    assert "pp-admin" not in page
    assert "PRIVATE KEY" not in page
    assert "gAAAAA" not in page  # not even the ciphertext
    assert "Leave blank to keep the stored value" in page


def test_saving_with_blank_secrets_keeps_them(admin_client):
    machine = make_machine()
    response = admin_client.post(
        f"/admin/machines/machine/{machine.pk}/change/", _form(machine, description="rack 2")
    )
    assert response.status_code == 302, response.content
    machine.refresh_from_db()
    assert machine.description == "rack 2"
    assert MachineCredential.objects.get(machine=machine).password == PASSWORD
    entry = AuditEntry.objects.filter(action="machine.update").latest("at")
    assert entry.source == "admin" and entry.changes == {"description": "rack 2", "labels": [],
                                                         "users": [], "groups": []}  # fmt: skip


def test_a_new_password_replaces_and_clear_removes(admin_client):
    machine = make_machine(private_key=private_key_text())
    admin_client.post(
        f"/admin/machines/machine/{machine.pk}/change/", _form(machine, password="new-pw-1")
    )
    assert MachineCredential.objects.get(machine=machine).password == "new-pw-1"
    admin_client.post(
        f"/admin/machines/machine/{machine.pk}/change/", _form(machine, clear_password="on")
    )
    assert MachineCredential.objects.get(machine=machine).password is None
    changes = [e.changes for e in AuditEntry.objects.filter(action="machine.update")]
    assert {"password": "set"} in [{k: v for k, v in c.items() if k == "password"} for c in changes]
    assert all("new-pw-1" not in repr(c) for c in changes)


def test_add_machine_through_admin_goes_through_the_service(admin_client):
    response = admin_client.post(
        "/admin/machines/machine/add/",
        {"name": "lab-9", "connector": "ssh", "hostname": "10.0.0.9", "port": 22, "os": "linux",
         "username": "ci",
         "python": "python3", "max_concurrent_runs": 2, "enabled": "on", "password": "pw-9"},
    )  # fmt: skip
    assert response.status_code == 302, response.content
    machine = Machine.objects.get(name="lab-9")
    assert MachineCredential.objects.get(machine=machine).password == "pw-9"
    assert AuditEntry.objects.filter(action="machine.create", target_id=machine.pk).exists()


def test_admin_actions_exist(admin_client):
    make_machine()
    page = admin_client.get("/admin/machines/machine/").content.decode()
    for label in ("Check connection", "Trust host key", "Provision venv pool", "Maintenance on"):
        assert label in page
