import json

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from machines.models import AuditEntry, Machine, Venv
from tests.conftest import free_port
from tests.factories import (
    PASSWORD,
    make_board,
    make_machine,
    make_ready_venvs,
    make_user,
    private_key_text,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    admin = make_user("root-admin", admin=True)
    owner = make_user("owner")
    stranger = make_user("stranger")
    machine = make_machine("lab-1", port=free_port(), users=[owner])
    other = make_machine("lab-2")
    board = make_board(machine)
    (venv,) = make_ready_venvs(machine, 1)
    return {"admin": admin, "owner": owner, "stranger": stranger, "machine": machine,
            "other": other, "board": board, "venv": venv}  # fmt: skip


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


# (method, url template, body, expected for: anonymous, stranger, owner, admin)
MATRIX = [
    ("get", "/api/v1/machines/", None, (403, 200, 200, 200)),
    ("get", "/api/v1/machines/{machine}/", None, (403, 404, 200, 200)),
    ("patch", "/api/v1/machines/{machine}/", {"description": "x"}, (403, 403, 403, 200)),
    ("post", "/api/v1/machines/{machine}/maintenance/", {"on": True}, (403, 403, 403, 200)),
    ("post", "/api/v1/machines/{machine}/check/", None, (403, 403, 403, 200)),
    ("get", "/api/v1/machines/{machine}/host-key/", None, (403, 403, 403, 502)),
    ("post", "/api/v1/machines/{machine}/trust-host-key/",
     {"fingerprint": "SHA256:" + "A" * 43}, (403, 403, 403, 502)),
    ("get", "/api/v1/boards/", None, (403, 200, 200, 200)),
    ("get", "/api/v1/boards/{board}/", None, (403, 404, 200, 200)),
    ("patch", "/api/v1/boards/{board}/", {"baud_rate": 921600}, (403, 403, 403, 200)),
    ("post", "/api/v1/boards/{board}/lock/", {"locked": True}, (403, 403, 403, 200)),
    ("get", "/api/v1/venvs/", None, (403, 200, 200, 200)),
    ("get", "/api/v1/venvs/{venv}/", None, (403, 404, 200, 200)),
    ("get", "/api/v1/audit/", None, (403, 403, 403, 200)),
    ("delete", "/api/v1/boards/{board}/", None, (403, 403, 403, 204)),
    ("delete", "/api/v1/machines/{machine}/", None, (403, 403, 403, 204)),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "body", "expected"), MATRIX)
@pytest.mark.parametrize(
    "role_index", [0, 1, 2, 3], ids=["anonymous", "stranger", "owner", "admin"]
)
def test_permission_matrix(world, method, url, body, expected, role_index):
    user = [None, world["stranger"], world["owner"], world["admin"]][role_index]
    path = url.format(machine=world["machine"].pk, board=world["board"].pk, venv=world["venv"].pk)
    response = getattr(client_for(user), method)(path, body, format="json")
    assert response.status_code == expected[role_index], response.content
    if response.status_code >= 400:
        assert set(response.json()) == {"message", "extra"}


def test_users_see_only_machines_assigned_to_them_or_their_groups(world):
    group = Group.objects.create(name="rf-team")
    world["stranger"].groups.add(group)
    world["other"].groups.add(group)

    def names(user):
        response = client_for(user).get("/api/v1/machines/")
        return [m["name"] for m in response.json()["results"]]

    assert names(world["owner"]) == ["lab-1"]
    assert names(world["stranger"]) == ["lab-2"]
    assert names(world["admin"]) == ["lab-1", "lab-2"]
    boards = client_for(world["stranger"]).get("/api/v1/boards/").json()["results"]
    assert boards == []


def test_create_machine_never_echoes_secrets_and_audits(world):
    key = private_key_text("pp-9")
    response = client_for(world["admin"]).post(
        "/api/v1/machines/",
        {"name": "lab-3", "hostname": "10.1.2.3", "username": "ci", "password": "s3cret-pw",
         "private_key": key, "passphrase": "pp-9", "labels": ["linux", "stm32"]},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    text = json.dumps(body)
    assert "s3cret-pw" not in text and "pp-9" not in text and "PRIVATE KEY" not in text
    assert body["has_password"] is True and body["has_private_key"] is True
    assert body["labels"] == ["linux", "stm32"]
    assert body["host_key"] is None and body["status"] == "unknown"
    entry = AuditEntry.objects.get(action="machine.create", target_id=body["id"])
    assert entry.actor == world["admin"] and entry.source == "api"


def test_patch_keeps_omitted_secrets_and_clears_empty_ones(world):
    client = client_for(world["admin"])
    url = f"/api/v1/machines/{world['machine'].pk}/"
    response = client.patch(
        url, {"description": "rack 4", "private_key": private_key_text()}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["has_password"] is True
    credential = world["machine"].credential
    credential.refresh_from_db()
    assert credential.password == PASSWORD and credential.version == 2
    response = client.patch(url, {"password": ""}, format="json")
    assert response.json()["has_password"] is False
    response = client.patch(url, {"private_key": ""}, format="json")
    assert response.status_code == 400
    assert response.json()["message"] == "Give a password or a private key (or both)."


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name!", "hostname": "h", "username": "u", "password": "p"}, "name"),
        ({"name": "ok", "hostname": "h", "username": "u", "password": "p", "port": 70000}, "port"),
        ({"name": "ok", "hostname": "h", "username": "u", "password": "p", "os": "beos"}, "os"),
        ({"name": "ok", "username": "u", "password": "p"}, "hostname"),
        ({"name": "ok", "hostname": "h", "username": "u", "password": "p",
          "labels": ["no spaces allowed"]}, "labels"),
        ({"name": "ok", "hostname": "h", "username": "u", "password": "p",
          "max_concurrent_runs": 0}, "max_concurrent_runs"),
        ({"name": "ok", "hostname": "h", "username": "u", "password": "p",
          "users": ["nobody-by-that-name"]}, "users"),
    ],
)  # fmt: skip
def test_bad_machine_input_is_a_400_naming_the_field(world, body, field):
    response = client_for(world["admin"]).post("/api/v1/machines/", body, format="json")
    assert response.status_code == 400
    payload = response.json()
    assert field in payload["extra"]["fields"]
    assert payload["message"].startswith("Invalid input:")
    assert not Machine.objects.filter(name="ok").exists()


def test_a_bad_private_key_is_a_400_with_a_reason(world):
    response = client_for(world["admin"]).post(
        "/api/v1/machines/",
        {"name": "k", "hostname": "h", "username": "u", "private_key": "not a key"},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert "not a valid OpenSSH or PEM private key" in body["message"]
    assert body["extra"] == {"field": "private_key"}


def test_duplicate_machine_name_is_a_clear_400(world):
    response = client_for(world["admin"]).post(
        "/api/v1/machines/",
        {"name": "lab-1", "hostname": "h", "username": "u", "password": "p"},
        format="json",
    )
    assert response.status_code == 400
    assert "name" in response.json()["extra"]["fields"]


def test_check_of_an_unreachable_machine_reports_offline(world):
    response = client_for(world["admin"]).post(f"/api/v1/machines/{world['machine'].pk}/check/")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False and body["status"] == "offline"
    assert "127.0.0.1" in body["message"]
    machine = Machine.objects.get(pk=world["machine"].pk)
    assert machine.status == "offline" and machine.last_error == body["message"]


def test_cannot_delete_a_machine_whose_pool_is_in_use(world):
    Venv.objects.filter(pk=world["venv"].pk).delete()
    from machines import services

    make_ready_venvs(world["machine"], 1)
    services.venv_lease(machine=world["machine"], holder="run:9")
    response = client_for(world["admin"]).delete(f"/api/v1/machines/{world['machine'].pk}/")
    assert response.status_code == 409
    assert "holding its venvs or boards" in response.json()["message"]


def test_board_input_is_validated(world):
    response = client_for(world["admin"]).post(
        "/api/v1/boards/",
        {"machine": world["machine"].pk, "name": "b", "serial_port": "/dev/ttyUSB0",
         "baud_rate": 10, "parity": "X", "data_bits": 9},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400
    assert {"baud_rate", "parity", "data_bits"} <= set(response.json()["extra"]["fields"])


def test_filters_and_search(world):
    client = client_for(world["admin"])
    from machines import services

    services.machine_update(machine=world["other"], actor=None, source="t", labels=["windows-lab"])
    assert [
        m["name"] for m in client.get("/api/v1/machines/?label=windows-lab").json()["results"]
    ] == ["lab-2"]
    assert [m["name"] for m in client.get("/api/v1/machines/?search=lab-1").json()["results"]] == [
        "lab-1"
    ]
    assert client.get("/api/v1/venvs/?state=ready").json()["count"] == 1
    assert client.get("/api/v1/venvs/?state=leased").json()["count"] == 0


def test_pool_reset_and_delete_requests_are_audited_and_queued(
    world, django_capture_on_commit_callbacks
):
    admin = client_for(world["admin"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin.post(
            f"/api/v1/machines/{world['machine'].pk}/pool/", {"size": 3}, format="json"
        )
    assert response.status_code == 202 and len(callbacks) == 1
    entry = AuditEntry.objects.get(action="pool.requested")
    assert entry.changes == {"size": 3, "python": "python3"} and entry.actor == world["admin"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin.post(f"/api/v1/venvs/{world['venv'].pk}/reset/")
    assert response.status_code == 202 and len(callbacks) == 1
    assert Venv.objects.get(pk=world["venv"].pk).state == Venv.State.DIRTY
    assert AuditEntry.objects.filter(action="venv.reset", target_id=world["venv"].pk).exists()
    from machines import services

    Venv.objects.filter(pk=world["venv"].pk).update(state=Venv.State.READY)
    services.venv_lease(machine=world["machine"], holder="run:5")
    assert admin.post(f"/api/v1/venvs/{world['venv'].pk}/reset/").status_code == 409
    services.board_lease(machine=world["machine"], holder="run:5")
    response = admin.delete(f"/api/v1/boards/{world['board'].pk}/")
    assert response.status_code == 409 and "is held by run:5" in response.json()["message"]
