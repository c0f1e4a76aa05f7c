import pytest

from jenkins.models import ApiToken, JenkinsServer
from machines.models import AuditEntry
from tests.factories import make_api_token, make_jenkins_job, make_jenkins_server, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(make_user("boss", admin=True))
    return client


def _form(server: JenkinsServer, **changes) -> dict:
    data = {
        "name": server.name, "url": server.url, "username": server.username,
        "verify_tls": "on", "connect_timeout": server.connect_timeout,
        "read_timeout": server.read_timeout, "give_up_after_hours": server.give_up_after_hours,
        "enabled": "on", "api_token": "",
    }  # fmt: skip
    data.update(changes)
    return data


def test_server_page_never_renders_the_token(admin_client):
    server = make_jenkins_server(api_token="tok-visible-never-42")
    page = admin_client.get(f"/admin/jenkins/jenkinsserver/{server.pk}/change/").content.decode()
    assert "tok-visible-never-42" not in page
    assert "gAAAAA" not in page  # nor its ciphertext
    assert "Leave blank to keep the stored value" in page


def test_blank_keeps_new_replaces_clear_removes(admin_client):
    server = make_jenkins_server(api_token="old-token")
    url = f"/admin/jenkins/jenkinsserver/{server.pk}/change/"
    assert admin_client.post(url, _form(server, read_timeout=45)).status_code == 302
    server.refresh_from_db()
    assert (server.api_token, server.read_timeout) == ("old-token", 45)
    admin_client.post(url, _form(server, api_token="new-token"))
    server.refresh_from_db()
    assert server.api_token == "new-token"
    admin_client.post(url, _form(server, clear_api_token="on"))
    server.refresh_from_db()
    assert server.api_token is None
    changes = [e.changes for e in AuditEntry.objects.filter(action="jenkins_server.update")]
    assert all("new-token" not in repr(c) and "old-token" not in repr(c) for c in changes)


def test_add_server_and_job_through_admin_goes_through_the_services(admin_client):
    response = admin_client.post(
        "/admin/jenkins/jenkinsserver/add/",
        {"name": "prod", "url": "https://ci.example/", "username": "svc", "verify_tls": "on",
         "connect_timeout": 5, "read_timeout": 30, "give_up_after_hours": 24, "enabled": "on",
         "api_token": "t-1"},
    )  # fmt: skip
    assert response.status_code == 302, response.content
    server = JenkinsServer.objects.get(name="prod")
    assert server.api_token == "t-1"
    response = admin_client.post(
        "/admin/jenkins/jenkinsjob/add/",
        {"server": server.pk, "full_name": "fw/nightly", "description": "",
         "parameter_defaults": '{"BOARD": "stm32"}', "enabled": "on"},
    )  # fmt: skip
    assert response.status_code == 302, response.content
    assert AuditEntry.objects.filter(action="jenkins_job.create").exists()


def test_token_admin_revokes_and_cannot_add(admin_client):
    token, _ = make_api_token(make_user("alice"))
    assert admin_client.get("/admin/jenkins/apitoken/add/").status_code == 403
    page = admin_client.get(f"/admin/jenkins/apitoken/{token.pk}/change/").content.decode()
    assert token.key_hash not in page
    admin_client.post(
        "/admin/jenkins/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None


def test_build_admin_shows_the_console(admin_client):
    from jenkins.services import builds

    job = make_jenkins_job(make_jenkins_server())
    build = builds.jenkins_build_create(job=job, actor=None, source="test")
    type(build).objects.filter(pk=build.pk).update(console_text="hello from the console")
    page = admin_client.get(f"/admin/jenkins/jenkinsbuild/{build.pk}/change/").content.decode()
    assert "hello from the console" in page
