"""Property-based fuzzing of the whole REST API against its own OpenAPI schema (schemathesis).

Every operation in ``/api/v1/schema/`` is called with generated input, valid and invalid, as an
ordinary user and as an admin (and the ingest operations with a machine's ingest token), each
authenticated by a real personal API token (``Authorization: Bearer ...``). Every answer must:

- not be a server error: no 5xx, except the gateway statuses (502/503/504) of the few views
  that talk to a machine or Jenkins while the caller waits, which declare them
  (``upstream_statuses``) and document them; those answers must still be the project's
  JSON error with a clear message (the schema checks below hold them to it),
- have a status code the schema documents for that operation,
- have the content type the schema documents,
- match the documented response body schema and response headers.

The requests go in-process through the real Django WSGI stack (middleware, authentication,
the exception handler) against the test database, with a small lab in it: machines (one
reachable over a real loopback sshd, one whose host is down), a board, a venv pool, cases,
runs of both users (queued, finished with events, an external reported run with results, an
artifact), a Jenkins server whose host is down, a job, a build, and tokens. Path ids are
steered to these rows most of the time so that reads and writes hit real data, not only 404s.
Each request runs in a savepoint that is rolled back after it, so every example meets the same
lab. No worker runs: runs that the API creates stay QUEUED (nothing commits, so nothing is
dispatched). A machine check against the machine that is down answers 200 with ``ok: false``;
its host key answers 502 with the machine named.

Bounded and deterministic for CI: ``MAX_EXAMPLES`` generated examples per operation and role
(``FUZZ_EXAMPLES`` overrides it) after schemathesis' deterministic coverage cases (boundary
values, missing and wrong-typed fields), derandomized, no example database and no shrinking
(set ``FUZZ_SHRINK=1`` locally to shrink a failure; ``FUZZ_PATH_REGEX`` picks operations).

Checks left out, and why:

- ``negative_data_rejection`` / ``positive_data_acceptance``: they judge whether the API
  *should* have accepted an input from the schema alone. The services validate more than a
  schema can say (a case's files, a run's machine/label pairing, ownership, state machines),
  so a valid-by-schema request is often a correct 4xx; and schemathesis' "negative" values are
  often still valid on the wire (e.g. a number sent as a query string). Those checks would
  report the design, not defects. Invalid input is still sent (negative mode) and must still
  get a documented, well-formed 4xx.
- ``use_after_free`` / ``ensure_resource_availability`` / ``ignored_auth``: stateful checks
  for link-following runs; this suite calls each operation on its own.
- ``max_response_time``: this suite asserts no timing (the machines are shared).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from django.core.files.base import ContentFile
from django.core.wsgi import get_wsgi_application
from django.db import transaction
from django.urls import Resolver404, resolve
from django.utils import timezone
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.sshd import SSHD, SSHDUnavailable, remove_sshd, start_sshd

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
SCHEMA_PATH = "/api/v1/schema/"

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "no-shrink": os.environ.get("FUZZ_SHRINK") != "1",
            "database": "none",
        },
    }
)
schema: schemathesis.BaseSchema = schemathesis.openapi.from_wsgi(
    SCHEMA_PATH, get_wsgi_application(), config=CONFIG
)
if os.environ.get("FUZZ_PATH_REGEX"):  # to fuzz a few operations while fixing one
    schema = schema.include(path_regex=os.environ["FUZZ_PATH_REGEX"])

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(900)]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@dataclass
class Lab:
    """What the fuzzed requests find in the database, and who sends them."""

    user_token: str
    admin_token: str
    ingest_token: str
    # Path prefix under /api/v1/ -> ids of real rows of that kind.
    ids: dict[str, list[int]] = field(default_factory=dict)
    artifact_names: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHD]:
    try:
        server = start_sshd()
    except SSHDUnavailable as exc:
        if os.environ.get("TMS_REQUIRE_SERVICES") == "1":
            pytest.fail(f"TMS_REQUIRE_SERVICES=1 but the test sshd cannot start: {exc}")
        pytest.skip(f"test sshd unavailable: {exc}")
    try:
        yield server
    finally:
        remove_sshd(server)


def _user(username: str, *, admin: bool = False) -> Any:
    from django.contrib.auth import get_user_model

    # No password: these users sign in with API tokens only (and hashing costs time).
    return get_user_model().objects.create_user(
        username, f"{username}@lab.test", is_staff=admin, is_superuser=admin
    )


@pytest.fixture
def in_test_transaction() -> Iterator[None]:
    """Keeps the database connection across requests, as Django's test client does: the WSGI
    handler would otherwise close it (and the test's transaction) after every request."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def lab(db: None, in_test_transaction: None, sshd: SSHD) -> Lab:
    from jenkins import services as jenkins_services
    from jenkins.models import ApiToken, JenkinsBuild
    from machines.models import Machine
    from test_runner import services as run_services
    from test_runner.ingest import services as ingest_services
    from test_runner.models import RunArtifact, RunSource, TestRun
    from tests.factories import make_board, make_machine, make_ready_venvs

    user = _user("fuzz-user")
    admin = _user("fuzz-admin", admin=True)
    _, user_token = jenkins_services.api_token_create(user=user, name="fuzz", source="test")
    _, admin_token = jenkins_services.api_token_create(user=admin, name="fuzz", source="test")

    # Reachable: a real sshd on loopback, its host key pinned.
    up = make_machine(
        "fuzz-up", hostname=sshd.host, port=sshd.port, username=sshd.username,
        password=sshd.password, users=[user], labels=["rack"],
    )  # fmt: skip
    Machine.objects.filter(pk=up.pk).update(
        host_key_type=sshd.host_key.key_type,
        host_key_base64=sshd.host_key.base64,
        host_key_fingerprint=sshd.host_key.fingerprint,
        host_key_trusted_at=timezone.now(),
    )
    # Down: nothing listens on the discard port.
    down = make_machine("fuzz-down", hostname="127.0.0.1", port=9, users=[user])
    venvs = make_ready_venvs(up, 2) + make_ready_venvs(down, 1)
    board = make_board(up, "fuzz-board")

    case = run_services.case_create(
        actor=user, name="fuzz-smoke", kind="script", entry_point="main.py",
        files={"main.py": "print('ok')\n"},
    )  # fmt: skip
    admin_case = run_services.case_create(
        actor=admin, name="fuzz-admin-case", kind="script", entry_point="main.py",
        files={"main.py": "print('admin')\n"},
    )  # fmt: skip
    queued = run_services.run_create(actor=user, case=case, machine=up)
    finished = run_services.run_create(actor=user, case=case, machine=up)
    run_services.events_store(run=finished, events=_sample_events())
    finished = (
        run_services.run_finish(
            run_id=finished.pk, outcome="passed", message="Finished: passed.", by="test"
        )
        or finished
    )
    RunArtifact.objects.create(
        run=finished, name="report.txt", file=ContentFile(b"all good\n", name="report.txt"),
        size=9,
    )  # fmt: skip
    admin_run = run_services.run_create(actor=admin, case=admin_case, machine=down)

    ingest, ingest_token = ingest_services.ingest_token_create(machine=up, name="fuzz")
    external = ingest_services.dry_run(token=ingest, data=_dry_run(up.name))

    server = jenkins_services.jenkins_server_create(
        actor=None, source="test", name="fuzz-ci", url="http://127.0.0.1:9/",
        username="ci-bot", api_token="jenkins-token-fuzz", connect_timeout=2, read_timeout=2,
    )  # fmt: skip
    job = jenkins_services.jenkins_job_create(
        actor=None, source="test", server=server, full_name="firmware/nightly"
    )
    build = jenkins_services.jenkins_build_create(
        job=job, parameters={"BOARD": "fuzz"}, actor=user, source="test", run=finished
    )
    # One that reached Jenkins (queued there): cancelling it asks the server, which is down.
    sent = jenkins_services.jenkins_build_create(
        job=job, parameters={"BOARD": "sent"}, actor=user, source="test"
    )
    JenkinsBuild.objects.filter(pk=sent.pk).update(queue_id=41)

    run_ids = [queued.pk, finished.pk, external.pk, admin_run.pk]
    assert TestRun.objects.filter(pk__in=run_ids, source=RunSource.EXTERNAL).count() == 1
    return Lab(
        user_token=user_token,
        admin_token=admin_token,
        ingest_token=ingest_token,
        ids={
            "machines": [up.pk, down.pk],
            "boards": [board.pk],
            "venvs": [v.pk for v in venvs],
            "test-cases": [case.pk, admin_case.pk],
            "runs": run_ids,
            "ingest/runs": [external.pk],
            "jenkins/servers": [server.pk],
            "jenkins/jobs": [job.pk],
            "jenkins/builds": list(JenkinsBuild.objects.values_list("pk", flat=True)) or [build.pk],
            "tokens": list(ApiToken.objects.values_list("pk", flat=True)),
        },
        artifact_names=["report.txt"],
    )


def _sample_events() -> list[dict[str, Any]]:
    ts = "2026-03-01T12:00:00.000Z"
    test = "tests/test_a.py::test_one"
    return [
        {"seq": 1, "ts": ts, "type": "run_start", "mode": "pytest", "platform": "linux"},
        {"seq": 2, "ts": ts, "type": "plan",
         "tests": [{"id": test, "name": "test_one", "file": "tests/test_a.py"}]},
        {"seq": 3, "ts": ts, "type": "test_start", "test": test},
        {"seq": 4, "ts": ts, "type": "log", "level": "INFO", "source": "test", "message": "hi"},
        {"seq": 5, "ts": ts, "type": "test_end", "test": test, "outcome": "passed",
         "duration_s": 0.5},
    ]  # fmt: skip


def _dry_run(machine_name: str) -> dict[str, Any]:
    def script(name: str) -> dict[str, Any]:
        return {"file_path": "/suite", "file_name": name, "script": "print('x')\n"}

    return {
        "machine_name": machine_name,
        "timestamp": "2026-03-01 12:00:00.000000",
        "master_scenario": {
            **script("scenario_master.py"),
            "scenarios": [{**script("scenario_01.py"), "tests": [script("01_01_test.py")]}],
        },
    }


def _steer_path(case: schemathesis.Case, lab: Lab) -> None:
    """Most generated ids become ids of real rows (so reads and writes reach the services);
    the rest stay as generated, to probe ids that do not exist. The coverage phase sends ids
    as text ("0"), the fuzzing phase as numbers: both are steered, keeping their type."""
    generated = case.path_parameters.get("id") if case.path_parameters else None
    if isinstance(generated, bool) or not isinstance(generated, int | str):
        return
    if isinstance(generated, str) and not generated.isdigit():
        return
    pk = int(generated)
    if pk % 4 == 3:
        return
    path = case.operation.path.removeprefix("/api/v1/")
    for prefix in sorted(lab.ids, key=len, reverse=True):
        if path.startswith(prefix + "/") and lab.ids[prefix]:
            rows = lab.ids[prefix]
            row = rows[pk % len(rows)]
            case.path_parameters["id"] = row if isinstance(generated, int) else str(row)
            break
    if isinstance(case.path_parameters.get("name"), str) and pk % 2 == 0:
        case.path_parameters["name"] = lab.artifact_names[0]


def _upstream_statuses(case: schemathesis.Case) -> tuple[int, ...]:
    """The gateway statuses the view declares (and the schema documents): a machine or a
    Jenkins server that cannot be reached while the caller waits. Only these 5xx may occur."""
    try:
        match = resolve(case.formatted_path)
    except Resolver404:
        return ()
    view = getattr(match.func, "view_class", None)
    return tuple(getattr(view, "upstream_statuses", ()))


def _fuzz(case: schemathesis.Case, lab: Lab, token: str) -> None:
    _steer_path(case, lab)
    if case.operation.path.startswith("/api/v1/ingest/") and case.method.upper() == "POST":
        token = lab.ingest_token
    # Our token, not a generated one (which would only ever get a 401).
    for name in [h for h in case.headers or {} if h.lower() == "authorization"]:
        del case.headers[name]
    headers = {"Authorization": f"Bearer {token}"}
    # Each request in its own savepoint, rolled back after it: as in production (autocommit), a
    # statement the database refuses in one request cannot poison the next, and every example
    # starts from the same lab.
    savepoint = transaction.savepoint()
    try:
        response = case.call(headers=headers)
    finally:
        transaction.savepoint_rollback(savepoint)
    checks = CHECKS
    if response.status_code in _upstream_statuses(case):
        # Still checked: documented status, JSON content type, the error body's schema.
        checks = [check for check in CHECKS if check is not not_a_server_error]
    case.validate_response(response, checks=checks, headers=headers)


def test_schema_is_valid_openapi_3_without_warnings() -> None:
    from django.core.management import call_command

    # The official OpenAPI 3.0 JSON schema (schemathesis' copy) ...
    schema.validate()
    assert schema.raw_schema["openapi"].startswith("3.0")
    # ... and drf-spectacular's own validation, which also fails on any generator warning (an
    # unresolved serializer, an enum name collision, a view it had to guess).
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull)


# Not DRF views, so not in the schema: the schema itself and its viewers, the pipeline client
# download (a Python file) and the catch-all JSON 404.
UNDOCUMENTED_ROUTES = {"schema/", "docs/", "redoc/", "jenkins/client.py", "^.*$"}


def test_schema_documents_every_api_route_with_its_errors() -> None:
    from django.urls import URLPattern, URLResolver, get_resolver

    def routes(patterns: list[Any], prefix: str = "") -> Iterator[str]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from routes(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern)

    # "runs/<int:pk>/" in Django is "runs/{id}/" in the schema.
    expected = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.removeprefix("api/v1/")).replace("{pk}", "{id}")
        for route in routes(get_resolver().url_patterns)
        if route.startswith("api/v1/") and route.removeprefix("api/v1/") not in UNDOCUMENTED_ROUTES
    }
    documented = {path.removeprefix("/api/v1/") for path in schema.raw_schema["paths"]}
    assert documented == expected
    for path, item in schema.raw_schema["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            assert {"401", "403", "503"} <= codes, f"{method} {path}: {sorted(codes)}"
            if method in ("post", "put", "patch", "delete"):
                assert {"400", "404", "409"} <= codes, f"{method} {path}: {sorted(codes)}"


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate]
    + ([Phase.shrink] if os.environ.get("FUZZ_SHRINK") == "1" else []),
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_as_user(case: schemathesis.Case, lab: Lab) -> None:
    _fuzz(case, lab, lab.user_token)


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_as_admin(case: schemathesis.Case, lab: Lab) -> None:
    _fuzz(case, lab, lab.admin_token)


# --- What the fuzzing found, pinned down -------------------------------------------------------


def _admin_client(admin: Any = None) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(admin or _user("fuzz-boss", admin=True))
    return client


def test_deleting_a_machine_that_runs_name_is_a_409_and_keeps_it() -> None:
    from machines.models import Machine
    from test_runner import services as run_services
    from tests.factories import make_machine, make_ready_venvs

    admin = _user("fuzz-boss", admin=True)
    machine = make_machine("named")
    make_ready_venvs(machine, 1)
    case = run_services.case_create(
        actor=admin, name="c", kind="script", entry_point="main.py", files={"main.py": "pass\n"}
    )
    run_services.run_create(actor=admin, case=case, machine=machine)

    response = _admin_client(admin).delete(f"/api/v1/machines/{machine.pk}/")

    assert response.status_code == 409, response.content
    assert "disable it instead" in response.json()["message"]
    assert Machine.objects.filter(pk=machine.pk).exists()


@pytest.mark.postgres
@pytest.mark.parametrize("url", ["/api/v1/runs/?queued_after={t}", "/api/v1/audit/?since={t}"])
def test_a_time_zone_offset_the_database_cannot_compare_is_a_400(url: str) -> None:
    # Python accepts offsets up to 24 h; PostgreSQL only up to 15:59.
    response = _admin_client().get(url.format(t="2026-01-01T00:00:00%2B22:31"))

    assert response.status_code == 400, response.content
    assert response.json()["message"].startswith("Invalid input:")


def test_a_body_over_the_upload_limit_is_a_413(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = _admin_client().post(
        "/api/v1/test-cases/", {"name": "big", "description": "x" * 5000}, format="multipart"
    )

    assert response.status_code == 413, response.content
    assert response.json()["message"] == "The request body is too large; send a smaller one."


def test_any_method_on_an_unknown_api_path_is_a_json_404() -> None:
    from django.test import Client

    # enforce_csrf_checks: as a browser's POST meets the CSRF middleware.
    response = Client(enforce_csrf_checks=True).post("/api/v1/boards/null,null/", {})

    assert response.status_code == 404
    assert response.json()["message"] == "No API endpoint at /api/v1/boards/null,null/."
