"""Builds linked to runs, run-finished callbacks (registration, the SSRF guard, delivery with
retries to a real local HTTP server), and the client download, with who may do what."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jenkins import services, tms_client
from jenkins.models import JenkinsBuild, RunCallback
from jenkins.services import callbacks as callback_services
from jenkins.tasks import run_callback_deliver_task
from machines.models import AuditEntry
from test_runner import services as run_services
from test_runner.models import TestRun
from tests.factories import (
    make_api_token,
    make_finished_run,
    make_jenkins_job,
    make_jenkins_server,
    make_machine,
    make_ready_venvs,
    make_user,
)

pytestmark = pytest.mark.django_db


class Receiver:
    """A loopback HTTP server that records POSTs and answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[str, dict[str, str], dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append((self.path, dict(self.headers), json.loads(body)))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://10.255.255.1/internal")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def world(settings):
    settings.RUN_CALLBACK_ALLOWED_HOSTS = ["127.0.0.1", ".ci.lab.example"]
    admin = make_user("root-admin", admin=True)
    owner = make_user("owner")
    stranger = make_user("stranger")
    machine = make_machine("bench-1")
    machine.users.add(owner, stranger)
    make_ready_venvs(machine, 2)
    run = make_finished_run(owner, machine)
    job = make_jenkins_job(make_jenkins_server())
    build = services.jenkins_build_create(job=job, actor=owner, source="test", run=run)
    other = services.jenkins_build_create(job=job, actor=owner, source="test")
    return {"admin": admin, "owner": owner, "stranger": stranger, "machine": machine,
            "run": run, "job": job, "build": build, "other_build": other}  # fmt: skip


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


# (method, url, body, expected for: anonymous, stranger, owner, admin). The owner started the
# run; the stranger may use the same machine but did not start it, so cannot see it.
MATRIX = [
    ("get", "/api/v1/runs/{run}/jenkins-builds/", None, (403, 404, 200, 200)),
    ("get", "/api/v1/runs/{run}/callbacks/", None, (403, 404, 200, 200)),
    ("post", "/api/v1/runs/{run}/callbacks/", {"url": "http://127.0.0.1:9/hook"},
     (403, 404, 201, 201)),
    ("post", "/api/v1/jenkins/builds/", {"job": "{job}", "run": "{run}"}, (403, 400, 202, 202)),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "body", "expected"), MATRIX)
@pytest.mark.parametrize("who", ["anonymous", "stranger", "owner", "admin"])
def test_permissions(world, method, url, body, expected, who):
    ids = {"run": world["run"].pk, "job": world["job"].pk}
    url = url.format(**ids)
    if body is not None:
        body = {k: int(v.format(**ids)) if k in ("job", "run") else v for k, v in body.items()}
    user = None if who == "anonymous" else world[who]
    response = getattr(client_for(user), method)(url, body, format="json")
    index = ["anonymous", "stranger", "owner", "admin"].index(who)
    assert response.status_code == expected[index], response.content
    assert "message" in response.json() or response.status_code < 300


def test_a_bearer_token_works_on_the_new_endpoints(world):
    _, secret = make_api_token(world["owner"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = client.get(f"/api/v1/runs/{world['run'].pk}/jenkins-builds/")
    assert response.status_code == 200
    assert [b["id"] for b in response.json()["results"]] == [world["build"].pk]


def test_builds_carry_their_run_and_a_run_lists_only_its_builds(world):
    owner = client_for(world["owner"])
    run_id = world["run"].pk
    listed = owner.get(f"/api/v1/runs/{run_id}/jenkins-builds/").json()["results"]
    assert [(b["id"], b["run"]) for b in listed] == [(world["build"].pk, run_id)]
    detail = owner.get(f"/api/v1/jenkins/builds/{world['other_build'].pk}/").json()
    assert detail["run"] is None

    response = owner.post(
        "/api/v1/jenkins/builds/", {"job": world["job"].pk, "run": run_id}, format="json"
    )
    assert response.status_code == 202 and response.json()["run"] == run_id
    assert JenkinsBuild.objects.get(pk=response.json()["id"]).run_id == run_id
    entry = AuditEntry.objects.filter(action="jenkins_build.trigger").latest("id")
    assert entry.changes["run"] == run_id


def test_a_build_cannot_be_linked_to_a_run_one_may_not_see(world):
    response = client_for(world["stranger"]).post(
        "/api/v1/jenkins/builds/", {"job": world["job"].pk, "run": world["run"].pk}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["message"] == f"No test run {world['run'].pk} that you may see."
    missing = client_for(world["admin"]).post(
        "/api/v1/jenkins/builds/", {"job": world["job"].pk, "run": 999999}, format="json"
    )
    assert missing.status_code == 400 and missing.json()["extra"] == {"field": "run"}


def test_deleting_a_run_keeps_its_builds(world):
    world["run"].delete()
    build = JenkinsBuild.objects.get(pk=world["build"].pk)
    assert build.run_id is None


# --- callbacks: registration and the SSRF guard -----------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://127.0.0.1/x", "must be an http:// or https:// URL"),
        ("file:///etc/passwd", "must be an http:// or https:// URL"),
        ("http://user:pw@127.0.0.1/x", "must not carry credentials"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "Callbacks to 169.254.169.254 are not allowed",
        ),
        ("http://localhost:8080/x", "Callbacks to localhost are not allowed"),
        ("http://evil-ci.lab.example.com/x", "not allowed"),
        ("http://127.0.0.1:99999/x", "Not a valid URL"),
        ("http:///nohost", "must be an http:// or https:// URL"),
    ],
)
def test_callback_urls_are_checked(world, url, fragment):
    response = client_for(world["owner"]).post(
        f"/api/v1/runs/{world['run'].pk}/callbacks/", {"url": url}, format="json"
    )
    assert response.status_code == 400
    assert fragment in response.json()["message"]
    assert not RunCallback.objects.exists()


def test_allowed_hosts_match_exactly_or_by_domain():
    allowed = ["127.0.0.1", ".ci.lab.example"]
    ok = callback_services.callback_host_allowed
    assert ok("127.0.0.1", allowed) and ok("ci.lab.example", allowed)
    assert ok("jenkins.ci.lab.example", allowed) and ok("JENKINS.CI.LAB.EXAMPLE.", allowed)
    assert not ok("127.0.0.2", allowed) and not ok("xci.lab.example", allowed)
    assert not ok("ci.lab.example.evil.com", allowed)


def test_callbacks_are_disabled_without_allowed_hosts(world, settings):
    settings.RUN_CALLBACK_ALLOWED_HOSTS = []
    response = client_for(world["owner"]).post(
        f"/api/v1/runs/{world['run'].pk}/callbacks/", {"url": "http://127.0.0.1/x"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("Run callbacks are disabled on this server")
    assert "RUN_CALLBACK_ALLOWED_HOSTS" in response.json()["message"]


def test_registering_the_same_url_twice_returns_the_first(world):
    client = client_for(world["owner"])
    url = f"/api/v1/runs/{world['run'].pk}/callbacks/"
    first = client.post(
        url, {"url": "https://jenkins.ci.lab.example/webhook-step/1"}, format="json"
    )
    again = client.post(
        url, {"url": "https://jenkins.ci.lab.example/webhook-step/1"}, format="json"
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["state"] == "pending" and first.json()["attempts"] == 0
    assert client.get(url).json()[0]["url"] == "https://jenkins.ci.lab.example/webhook-step/1"
    assert AuditEntry.objects.filter(action="run_callback.create").count() == 1


# --- callbacks: delivery --------------------------------------------------------------------


def register(world, url: str) -> RunCallback:
    callback, _ = services.run_callback_create(
        run=world["run"], url=url, actor=world["owner"], source="test",
        base_url="https://tms.lab.example/",
    )  # fmt: skip
    return callback


def test_delivered_with_the_run_summary_and_links(world, receiver):
    callback = register(world, receiver.url)
    assert services.run_callbacks_claim_due() == [callback.pk]
    assert services.run_callbacks_claim_due() == []  # claimed: no second sweep takes it
    assert run_callback_deliver_task(callback.pk) == "delivered"

    [(path, headers, payload)] = receiver.received
    run = world["run"]
    assert path == "/hook/abc" and headers["Content-Type"] == "application/json"
    assert headers["X-TMS-Event"] == "run.finished"
    assert payload["event"] == "run.finished"
    assert payload["run"]["id"] == run.pk and payload["run"]["outcome"] == "passed"
    assert payload["run"]["status"] == "done" and payload["run"]["case"] == "smoke"
    assert set(payload["run"]["counts"]) == {"planned", "passed", "failed", "errors", "skipped"}
    api = f"https://tms.lab.example/api/v1/runs/{run.pk}/"
    assert payload["links"]["run"] == api and payload["links"]["junit"] == api + "junit.xml"

    callback.refresh_from_db()
    assert (callback.state, callback.attempts, callback.last_status_code) == ("delivered", 1, 200)
    assert callback.delivered_at is not None and callback.last_error == ""
    # Idempotent: a second delivery of the same callback sends nothing.
    assert run_callback_deliver_task(callback.pk) == "delivered"
    assert len(receiver.received) == 1
    shown = client_for(world["owner"]).get(f"/api/v1/runs/{run.pk}/callbacks/").json()[0]
    assert shown["state"] == "delivered" and shown["delivered_at"] is not None


def test_a_500_is_retried_with_backoff_then_delivered(world, receiver):
    receiver.statuses = [500, 503]
    callback = register(world, receiver.url)
    start = timezone.now()
    for expected_attempts, expected_delay in [(1, 5), (2, 10)]:
        [claimed] = services.run_callbacks_claim_due(now=start + timedelta(hours=1))
        assert run_callback_deliver_task(claimed) == "pending"
        callback.refresh_from_db()
        assert callback.attempts == expected_attempts
        assert callback.last_error.startswith("HTTP 5")
        assert callback.last_status_code in (500, 503)
        assert callback.next_attempt_at is not None and callback.last_attempt_at is not None
        wait = (callback.next_attempt_at - callback.last_attempt_at).total_seconds()
        assert wait == pytest.approx(expected_delay, abs=0.01)
        # Not due before its backoff is over.
        assert services.run_callbacks_claim_due(now=callback.last_attempt_at) == []
        start = callback.next_attempt_at
    [claimed] = services.run_callbacks_claim_due(now=start + timedelta(hours=1))
    assert run_callback_deliver_task(claimed) == "delivered"
    callback.refresh_from_db()
    assert (callback.attempts, callback.last_status_code, callback.last_error) == (3, 200, "")
    assert len(receiver.received) == 3


def test_gives_up_after_the_last_attempt(world):
    callback = register(world, f"http://127.0.0.1:{_closed_port()}/hook")
    RunCallback.objects.filter(pk=callback.pk).update(attempts=callback_services.MAX_ATTEMPTS - 1)
    assert run_callback_deliver_task(callback.pk) == "failed"
    callback.refresh_from_db()
    assert callback.last_error.startswith(f"Gave up after {callback_services.MAX_ATTEMPTS}")
    assert "ConnectionError" in callback.last_error and callback.next_attempt_at is None


def test_a_redirect_is_not_followed(world, receiver):
    receiver.statuses = [302]
    callback = register(world, receiver.url)
    assert run_callback_deliver_task(callback.pk) == "pending"
    callback.refresh_from_db()
    assert "redirects are not followed" in callback.last_error
    assert len(receiver.received) == 1


def test_a_host_no_longer_allowed_is_never_sent_to(world, receiver, settings):
    callback = register(world, receiver.url)
    settings.RUN_CALLBACK_ALLOWED_HOSTS = ["jenkins.ci.lab.example"]
    assert run_callback_deliver_task(callback.pk) == "failed"
    callback.refresh_from_db()
    assert callback.last_error.startswith("Not sent: Callbacks to 127.0.0.1 are not allowed")
    assert receiver.received == []


def test_an_unfinished_run_is_not_reported(world, receiver):
    run = run_services.run_create(
        actor=world["owner"], case=world["run"].case, machine=world["machine"]
    )
    callback, _ = services.run_callback_create(
        run=run, url=receiver.url, actor=world["owner"], source="test"
    )
    assert services.run_callbacks_claim_due() == []
    assert run_callback_deliver_task(callback.pk) == "pending"
    assert receiver.received == []
    run_services.run_cancel(run=TestRun.objects.get(pk=run.pk), actor=world["owner"])
    assert services.run_callbacks_claim_due() == [callback.pk]
    assert run_callback_deliver_task(callback.pk) == "delivered"
    assert receiver.received[0][2]["run"]["outcome"] == "cancelled"


def _closed_port() -> int:
    from tests.conftest import free_port

    return free_port()


# --- the client, served -----------------------------------------------------------------------


def test_client_is_served_from_its_one_source_file_without_login():
    response = APIClient().get("/api/v1/jenkins/client.py")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/x-python")
    with open(tms_client.__file__, "rb") as source:
        assert response.content == source.read()
    assert APIClient().post("/api/v1/jenkins/client.py").status_code == 405
