"""The validation stack from the original plan: every model bakes and reads back, the OpenAPI
schema generates without warnings, no URL answers 500 to anyone, migrations are complete."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from model_bakery import baker

PROJECT_APPS = ("test_management_system", "machines", "test_runner", "jenkins")
# Models that Django and the libraries own, baked too so the check is never vacuous.
THIRD_PARTY = ("auth.User", "auth.Group")
# Random values cannot satisfy these models' check constraints (a lease is complete or absent).
VALID: dict[str, dict[str, Any]] = {
    "machines.Venv": {"state": "ready", "lease_holder": "", "lease_expires_at": None},
    "machines.Board": {"lease_holder": "", "lease_expires_at": None},
    "machines.Machine": {"port": 22, "max_concurrent_runs": 2},
    # A run is queued (no outcome yet) and asks for a machine or a label.
    "test_runner.TestRun": {
        "status": "queued", "outcome": "", "requested_label": "lab", "retry_of": None,
    },
}  # fmt: skip
RUN = {
    "run__status": "queued", "run__outcome": "", "run__requested_label": "lab",
    "run__retry_of": None,
}  # fmt: skip
for _label in ("RunEvent", "TestResult", "RunTransition", "RunArtifact"):
    VALID[f"test_runner.{_label}"] = RUN
VALID["jenkins.JenkinsBuild"] = {"run": None}
VALID["jenkins.RunCallback"] = RUN


def _models() -> list[str]:
    ours = [
        m._meta.label
        for m in apps.get_models()
        if m._meta.app_label in PROJECT_APPS and not m._meta.abstract
    ]
    return sorted(ours) + list(THIRD_PARTY)


@pytest.mark.django_db
@pytest.mark.parametrize("label", _models())
def test_every_model_bakes_and_reads_back(label):
    model = apps.get_model(label)
    obj = baker.make(model, _fill_optional=True, **VALID.get(label, {}))
    again = model._default_manager.get(pk=obj.pk)
    assert again.pk == obj.pk
    assert str(again)  # __str__ works on a fully filled row


@pytest.mark.django_db
def test_openapi_schema_generates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    # --fail-on-warn turns every drf-spectacular warning into a failure.
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(out))
    schema = out.read_text()
    assert "openapi: 3." in schema
    assert "/api/v1/me/" in schema


@pytest.mark.django_db
def test_migrations_are_complete():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def _walk(patterns: list, prefix: str = "") -> list[tuple[str, str]]:
    """(route regex, name) of every URL pattern, nested includes flattened."""
    found: list[tuple[str, str]] = []
    for p in patterns:
        if isinstance(p, URLResolver):
            found += _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            found.append((prefix + str(p.pattern), p.name or ""))
    return found


_PARAM = re.compile(r"<(?:(?P<conv>\w+):)?(?P<name>\w+)>")


def _concrete(route: str) -> str:
    """A request path for a route: path converters get a plausible value."""
    route = route.replace("^", "").replace("$", "").replace("\\Z", "")
    if route in (".*", "(?P<path>.*)"):
        return "/api/v1/anything/"

    def value(match: re.Match[str]) -> str:
        conv = match.group("conv") or "str"
        return {"int": "1", "uuid": "00000000-0000-0000-0000-000000000001"}.get(conv, "x")

    path = _PARAM.sub(value, route)
    path = re.sub(r"\(\?P<\w+>[^)]*\)", "1", path)  # admin's regex routes
    return "/" + path.replace("\\", "")


def _all_paths() -> list[str]:
    return sorted({_concrete(route) for route, _ in _walk(get_resolver().url_patterns)})


@pytest.fixture
def as_user(client, request):
    role = request.param
    if role == "user":
        client.force_login(get_user_model().objects.create_user("plain", password="pw-12345678"))
    elif role == "admin":
        client.force_login(
            get_user_model().objects.create_superuser("boss", password="pw-12345678")
        )
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("as_user", ["anonymous", "user", "admin"], indirect=True)
def test_no_url_answers_500(as_user):
    paths = _all_paths()
    assert len(paths) > 20  # the admin alone has many: the walk really found the URLs
    failures = []
    for path in paths:
        response = as_user.get(path)
        if response.status_code >= 500:
            failures.append((path, response.status_code))
    assert failures == []
