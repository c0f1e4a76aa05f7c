import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.django_db


def test_live_answers_without_login(client):
    response = client.get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_ready_checks_database_and_broker(client):
    response = client.get("/health/ready/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True


def test_ready_is_503_naming_the_broker_when_it_is_down(client, settings):
    closed = free_port()  # nothing listens there
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 1}
    response = client.get("/health/ready/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["down"] == ["broker"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["error"]


def test_ready_never_echoes_broker_credentials(client, settings):
    closed = free_port()
    settings.CELERY_BROKER_URL = f"redis://:hunter2-secret@127.0.0.1:{closed}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 1}
    response = client.get("/health/ready/")
    assert response.status_code == 503
    assert b"hunter2-secret" not in response.content


def test_health_only_answers_get(client):
    assert client.post("/health/ready/").status_code == 405
