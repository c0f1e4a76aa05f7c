import logging

import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.urls("tests.unit.error_views"), pytest.mark.django_db]


@pytest.fixture
def api() -> APIClient:
    # raise_request_exception=False: see what a real client sees for an unhandled error.
    return APIClient(raise_request_exception=False)


def test_validation_error_names_the_fields(api):
    response = api.post("/api/v1/fail/validation/", {"name": "too long", "count": 0}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"message", "extra"}
    assert body["message"].startswith("Invalid input: name:")
    assert set(body["extra"]["fields"]) == {"name", "count"}


def test_application_error_keeps_message_and_extra(api):
    response = api.post("/api/v1/fail/application/")
    assert response.status_code == 400
    assert response.json() == {
        "message": "Machine lab-3 is in maintenance.",
        "extra": {"machine": "lab-3"},
    }


def test_conflict_error_is_409(api):
    response = api.post("/api/v1/fail/conflict/")
    assert response.status_code == 409
    assert response.json()["message"] == "Run 7 has already finished."


def test_django_validation_error_becomes_400_with_fields(api):
    response = api.post("/api/v1/fail/django-validation/")
    assert response.status_code == 400
    assert response.json()["extra"]["fields"] == {"port": ["Port must be between 1 and 65535."]}


@pytest.mark.parametrize(("kind", "status"), [("http404", 404), ("denied", 403)])
def test_django_exceptions_keep_their_status(api, kind, status):
    response = api.post(f"/api/v1/fail/{kind}/")
    assert response.status_code == status
    assert set(response.json()) == {"message", "extra"}


def test_unexpected_exception_is_json_500_with_request_id_and_logged(api, caplog):
    with caplog.at_level(logging.ERROR, logger="test_management_system.errors"):
        response = api.post("/api/v1/fail/bug/", HTTP_X_REQUEST_ID="req-123")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["extra"] == {"request_id": "req-123"}
    assert "req-123" in body["message"]
    assert "ZeroDivisionError" not in body["message"]  # no internals leak to the client
    assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)


def test_unauthenticated_api_call_is_json(api):
    response = api.get("/api/v1/me/")
    assert response.status_code in (401, 403)
    assert response.json()["message"] == "Authentication credentials were not provided."


@pytest.mark.parametrize("debug", [True, False])
def test_unknown_api_path_is_json_404_even_in_debug(api, settings, debug):
    settings.DEBUG = debug
    response = api.get("/api/v1/no-such-endpoint/")
    assert response.status_code == 404
    assert response.json() == {
        "message": "No API endpoint at /api/v1/no-such-endpoint/.",
        "extra": {},
    }


def test_unknown_page_is_html_404(client, settings):
    settings.DEBUG = False
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert b"There is nothing at this address." in response.content
