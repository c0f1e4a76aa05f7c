import json

import pytest
from django.db import connection
from rest_framework.test import APIClient

from jenkins.models import ApiToken, JenkinsBuild, JenkinsServer
from jenkins.services import builds as build_services
from machines.models import AuditEntry
from tests.factories import (
    make_api_token,
    make_jenkins_job,
    make_jenkins_server,
    make_user,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    admin = make_user("root-admin", admin=True)
    owner = make_user("owner")
    stranger = make_user("stranger")
    server = make_jenkins_server()
    spare_server = make_jenkins_server("spare")
    job = make_jenkins_job(server)
    spare_job = make_jenkins_job(server, "spare-job")
    build = build_services.jenkins_build_create(job=job, actor=owner, source="test")
    token, _ = make_api_token(owner)
    return {"admin": admin, "owner": owner, "stranger": stranger, "server": server,
            "spare_server": spare_server, "job": job, "spare_job": spare_job, "build": build,
            "token": token}  # fmt: skip


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


# (method, url template, body, expected for: anonymous, stranger, owner, admin). The owner
# triggered the build and owns the token. The server at 127.0.0.1:9 is down: 503 for a check.
MATRIX = [
    ("get", "/api/v1/jenkins/servers/", None, (403, 403, 403, 200)),
    ("post", "/api/v1/jenkins/servers/",
     {"name": "new", "url": "https://ci.example/", "api_token": "t"}, (403, 403, 403, 201)),
    ("get", "/api/v1/jenkins/servers/{server}/", None, (403, 403, 403, 200)),
    ("patch", "/api/v1/jenkins/servers/{server}/", {"read_timeout": 9}, (403, 403, 403, 200)),
    ("post", "/api/v1/jenkins/servers/{server}/check/", None, (403, 403, 403, 200)),
    ("delete", "/api/v1/jenkins/servers/{spare_server}/", None, (403, 403, 403, 204)),
    ("get", "/api/v1/jenkins/jobs/", None, (403, 200, 200, 200)),
    ("post", "/api/v1/jenkins/jobs/", {"server": "{server}", "full_name": "a/b"},
     (403, 403, 403, 201)),
    ("get", "/api/v1/jenkins/jobs/{job}/", None, (403, 200, 200, 200)),
    ("patch", "/api/v1/jenkins/jobs/{job}/", {"description": "x"}, (403, 403, 403, 200)),
    ("delete", "/api/v1/jenkins/jobs/{spare_job}/", None, (403, 403, 403, 204)),
    ("get", "/api/v1/jenkins/builds/", None, (403, 200, 200, 200)),
    ("post", "/api/v1/jenkins/builds/", {"job": "{job}", "parameters": {"BOARD": "x"}},
     (403, 202, 202, 202)),
    ("get", "/api/v1/jenkins/builds/{build}/", None, (403, 200, 200, 200)),
    ("get", "/api/v1/jenkins/builds/{build}/console/?offset=0", None, (403, 200, 200, 200)),
    ("post", "/api/v1/jenkins/builds/{build}/cancel/", None, (403, 403, 200, 200)),
    ("get", "/api/v1/tokens/", None, (403, 200, 200, 200)),
    ("post", "/api/v1/tokens/", {"name": "laptop"}, (403, 201, 201, 201)),
    ("get", "/api/v1/tokens/{token}/", None, (403, 404, 200, 200)),
    ("delete", "/api/v1/tokens/{token}/", None, (403, 404, 204, 204)),
]  # fmt: skip


def _fill(value, ids):
    if isinstance(value, str):
        return int(value.format(**ids)) if value.startswith("{") else value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("method", "url", "body", "expected"), MATRIX)
@pytest.mark.parametrize(
    "role_index", [0, 1, 2, 3], ids=["anonymous", "stranger", "owner", "admin"]
)
def test_permission_matrix(world, method, url, body, expected, role_index):
    user = [None, world["stranger"], world["owner"], world["admin"]][role_index]
    ids = {k: v.pk for k, v in world.items()}
    response = getattr(client_for(user), method)(url.format(**ids), _fill(body, ids), format="json")
    assert response.status_code == expected[role_index], response.content
    if response.status_code >= 400:
        assert set(response.json()) == {"message", "extra"}


def test_server_check_of_a_server_that_is_down_says_so(world):
    body = client_for(world["admin"]).post(f"/api/v1/jenkins/servers/{world['server'].pk}/check/")
    assert body.json()["ok"] is False
    assert "Cannot connect to Jenkins at http://127.0.0.1:9/" in body.json()["message"]


def test_server_token_is_write_only_and_encrypted(world):
    client = client_for(world["admin"])
    response = client.post(
        "/api/v1/jenkins/servers/",
        {"name": "prod", "url": "https://ci.lab.example/", "username": "svc",
         "api_token": "11aa22bb33cc44dd"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert "11aa22bb33cc44dd" not in json.dumps(response.json())
    assert response.json()["has_api_token"] is True
    pk = response.json()["id"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_token FROM jenkins_jenkinsserver WHERE id = %s", [pk])
        (raw,) = cursor.fetchone()
    assert raw and "11aa22bb33cc44dd" not in raw
    assert JenkinsServer.objects.get(pk=pk).api_token == "11aa22bb33cc44dd"
    # Left out: kept. "" clears.
    client.patch(f"/api/v1/jenkins/servers/{pk}/", {"read_timeout": 40}, format="json")
    assert JenkinsServer.objects.get(pk=pk).api_token == "11aa22bb33cc44dd"
    response = client.patch(f"/api/v1/jenkins/servers/{pk}/", {"api_token": ""}, format="json")
    assert response.json()["has_api_token"] is False
    entry = AuditEntry.objects.filter(action="jenkins_server.update").latest("at")
    assert entry.changes == {"api_token": "cleared"}
    assert not AuditEntry.objects.filter(changes__icontains="11aa22bb33cc44dd").exists()


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/v1/jenkins/servers/", {"name": "bad name", "url": "https://x.example/"}, "name"),
        ("/api/v1/jenkins/servers/", {"name": "ok", "url": "not a url"}, "url"),
        ("/api/v1/jenkins/servers/", {"name": "ok", "url": "https://x.example/",
                                      "read_timeout": 0}, "read_timeout"),
        ("/api/v1/jenkins/jobs/", {"server": 999999, "full_name": "a"}, "server"),
        ("/api/v1/jenkins/jobs/", {"server": "{server}", "full_name": "/a//b"}, "full_name"),
        ("/api/v1/jenkins/jobs/", {"server": "{server}", "full_name": "a",
                                   "parameter_defaults": ["x"]}, "parameter_defaults"),
        ("/api/v1/jenkins/builds/", {"job": 999999}, "job"),
        ("/api/v1/jenkins/builds/", {"job": "{job}", "parameters": "BOARD=x"}, "parameters"),
        ("/api/v1/tokens/", {"name": ""}, "name"),
        ("/api/v1/tokens/", {"name": "t", "expires_at": "tomorrow"}, "expires_at"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_field(world, url, body, field):
    ids = {k: v.pk for k, v in world.items()}
    response = client_for(world["admin"]).post(url, _fill(body, ids), format="json")
    assert response.status_code == 400, response.content
    payload = response.json()
    assert field in payload["extra"]["fields"]
    assert payload["message"].startswith("Invalid input:")


@pytest.mark.parametrize(
    ("url", "body", "field", "words"),
    [
        ("/api/v1/jenkins/builds/", {"job": "{job}", "parameters": {"TMS_TRIGGER_ID": "x"}},
         "parameters", "set by this service"),
        ("/api/v1/jenkins/jobs/", {"server": "{server}", "full_name": "firmware/nightly"},
         "full_name", "already exists"),
        ("/api/v1/tokens/", {"name": "pipeline"}, "name", "already have an active token"),
        ("/api/v1/tokens/", {"name": "t", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at",
         "in the future"),
    ],
)  # fmt: skip
def test_input_refused_by_a_service_names_the_field(world, url, body, field, words):
    ids = {k: v.pk for k, v in world.items()}
    response = client_for(world["owner"] if "tokens" in url else world["admin"]).post(
        url, _fill(body, ids), format="json"
    )
    assert response.status_code == 400, response.content
    payload = response.json()
    assert words in payload["message"]
    assert payload["extra"] == {"field": field}


def test_trigger_records_the_parameters_and_who(world):
    response = client_for(world["owner"]).post(
        "/api/v1/jenkins/builds/",
        {"job": world["job"].pk, "parameters": {"BOARD": "nrf52"}},
        format="json",
    )
    body = response.json()
    assert body["status"] == "queued" and body["triggered_by"] == "owner"
    assert body["parameters"] == {"BOARD": "nrf52", "TMS_TRIGGER_ID": body["trigger_id"]}
    assert len(body["trigger_id"]) == 32


def test_disabled_job_cannot_be_triggered(world):
    from jenkins import services

    services.jenkins_job_update(job=world["job"], actor=None, source="t", enabled=False)
    response = client_for(world["owner"]).post(
        "/api/v1/jenkins/builds/", {"job": world["job"].pk}, format="json"
    )
    assert response.status_code == 409
    assert "disabled" in response.json()["message"]


def test_cancel_a_finished_build_is_a_conflict(world):
    JenkinsBuild.objects.filter(pk=world["build"].pk).update(status="done", result="SUCCESS")
    response = client_for(world["owner"]).post(
        f"/api/v1/jenkins/builds/{world['build'].pk}/cancel/"
    )
    assert response.status_code == 409
    assert "already finished (SUCCESS)" in response.json()["message"]


def test_console_tail_from_an_offset_and_past_the_kept_part(world):
    build = world["build"]
    JenkinsBuild.objects.filter(pk=build.pk).update(
        console_text="line 3\nline 4\n", console_dropped=14, url="https://ci.example/job/x/7/"
    )
    client = client_for(world["stranger"])
    url = f"/api/v1/jenkins/builds/{build.pk}/console/"
    body = client.get(url + "?offset=21").json()
    assert body == {"offset": 21, "next_offset": 28, "text": "line 4\n", "truncated": False,
                    "complete": False, "status": "queued", "result": ""}  # fmt: skip
    body = client.get(url + "?offset=0").json()
    assert body["truncated"] is True and body["offset"] == 14
    assert body["text"].startswith("[... the first 14 characters of this log are not kept")
    assert "https://ci.example/job/x/7/consoleText" in body["text"]
    assert body["text"].endswith("line 3\nline 4\n")
    assert client.get(url + "?offset=-1").status_code == 400
    detail = client.get(f"/api/v1/jenkins/builds/{build.pk}/").json()
    assert detail["console_text"].endswith("line 3\nline 4\n")
    assert detail["console_length"] == 28


def test_tokens_list_only_your_own_and_the_secret_shows_once(world):
    client = client_for(world["stranger"])
    created = client.post("/api/v1/tokens/", {"name": "ci"}, format="json").json()
    secret = created["token"]
    assert secret.startswith("tms_") and len(secret) > 40
    assert created["prefix"] == secret[:10] and created["active"] is True
    listed = client.get("/api/v1/tokens/").json()["results"]
    assert [t["name"] for t in listed] == ["ci"]
    assert "token" not in listed[0] and secret not in json.dumps(listed)
    assert secret not in json.dumps(client.get(f"/api/v1/tokens/{created['id']}/").json())
    everyone = client_for(world["admin"]).get("/api/v1/tokens/").json()["results"]
    assert {t["user"] for t in everyone} == {"owner", "stranger"}
    assert ApiToken.objects.filter(name="ci").count() == 1


def test_build_filters(world):
    client = client_for(world["stranger"])
    assert client.get("/api/v1/jenkins/builds/?mine=true").json()["count"] == 0
    assert client_for(world["owner"]).get("/api/v1/jenkins/builds/?mine=true").json()["count"] == 1
    assert client.get("/api/v1/jenkins/builds/?status=done").json()["count"] == 0
    assert client.get(f"/api/v1/jenkins/builds/?job={world['job'].pk}").json()["count"] == 1
