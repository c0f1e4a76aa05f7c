import json
import logging

import pytest

from test_management_system.logging import JsonFormatter, RequestIdFilter, request_id_var

pytestmark = pytest.mark.django_db


def test_response_carries_a_generated_request_id(client):
    response = client.get("/health/")
    assert len(response["X-Request-ID"]) == 32


def test_a_sane_incoming_request_id_is_kept(client):
    response = client.get("/health/", HTTP_X_REQUEST_ID="jenkins-build-42.7")
    assert response["X-Request-ID"] == "jenkins-build-42.7"


@pytest.mark.parametrize("hostile", ["a b", "x" * 65, "id\nINFO forged line", "<script>"])
def test_an_unsafe_incoming_request_id_is_replaced(client, hostile):
    response = client.get("/health/", HTTP_X_REQUEST_ID=hostile)
    assert response["X-Request-ID"] != hostile
    assert len(response["X-Request-ID"]) == 32


def test_log_lines_inside_a_request_carry_its_id(client, caplog):
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.WARNING):
        client.get("/no-such-page/", HTTP_X_REQUEST_ID="trace-me")
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records, "Django logs a 404 as a warning"
    assert {r.request_id for r in records} == {"trace-me"}


def test_json_formatter_writes_one_parseable_object_per_record():
    token = request_id_var.set("req-9")
    try:
        record = logging.LogRecord("tms.x", logging.ERROR, __file__, 1, "disk %s", ("full",), None)
        RequestIdFilter().filter(record)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys

            record.exc_info = sys.exc_info()
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    assert "\n" not in line.strip() or line.count("{") >= 1
    payload = json.loads(line)
    assert payload["message"] == "disk full"
    assert payload["level"] == "ERROR"
    assert payload["logger"] == "tms.x"
    assert payload["request_id"] == "req-9"
    assert "RuntimeError: boom" in payload["exception"]
    assert payload["ts"].endswith("+00:00")
