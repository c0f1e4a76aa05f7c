"""After a full run through the real stack, no secret is anywhere it should not be.

Every kind of secret the service holds gets a unique, recognisable random value: the machine's
SSH password, a private key and its passphrase, a Jenkins API token, a personal API token, an
ingest token, and the SECRET_KEY / FIELD_ENCRYPTION_KEYS in use. Then a run on a board is
started over HTTP with the personal token (uvicorn on the test database, a real Celery worker,
the loopback sshd machine, a simulated board), a Jenkins build is followed through the stand-in,
an external runner reports with the ingest token, and the admin page and API detail of the
machines are fetched. The database dump (pg_dump, or SQLite's iterdump), the worker's and the web
server's logs, this process's log records, the run's events and log, the Jenkins console and
every file left in the machine's workspace are read, and none of them may hold any secret,
as is or base64 / urlsafe-base64 encoded.

The check can fail: the same haystacks must hold the machine's name, the run's log lines, the
requests made, so an empty or wrong dump cannot pass.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from jenkins.models import TRIGGER_PARAMETER, JenkinsBuild
from test_runner import services as run_services
from test_runner.ingest.services import ingest_token_create
from test_runner.models import RunEvent, RunOutcome, TestRun
from tests.factories import (
    make_api_token,
    make_jenkins_job,
    make_jenkins_server,
    make_machine,
    private_key_text,
)
from tests.integration.runs import conftest as runs
from tests.integration.runs.conftest import assert_gap_free, wait_for
from tests.jenkins_standin import StandInJenkins
from tests.liveserver import Web

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The lab of the run tests: the loopback sshd as a machine, a warm venv pool, a simulated board.
lab, board_sim = runs.lab, runs.board_sim


def variants(secret: str) -> list[bytes]:
    raw = secret.encode()
    forms = {raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw)}
    forms |= {f.rstrip(b"=") for f in list(forms)}
    return [f for f in forms if len(f) >= 12]


def http(web: Web, method: str, path: str, token: str, body: Any = None) -> Any:
    request = urllib.request.Request(  # noqa: S310  # our own loopback server
        f"{web.url}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        data = response.read()
    return json.loads(data) if data and data[:1] in b"[{" else data


def database_dump() -> bytes:
    params = connection.settings_dict
    if connection.vendor == "postgresql":
        env = {**os.environ, "PGPASSWORD": str(params.get("PASSWORD") or "")}
        return subprocess.run(
            ["pg_dump", "--no-owner", "-h", str(params.get("HOST") or "127.0.0.1"),
             "-p", str(params.get("PORT") or 5432), "-U", str(params.get("USER") or "root"),
             str(params["NAME"])],
            check=True, capture_output=True, env=env, timeout=120,
        ).stdout  # fmt: skip
    with sqlite3.connect(str(params["NAME"])) as db:
        return "\n".join(db.iterdump()).encode()


def workspace_files(root: Path) -> dict[str, bytes]:
    """Every file the runs left in the machine's work directory; the venvs are third-party
    packages, not ours, and are left out."""
    found: dict[str, bytes] = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d != "venvs"]
        for name in files:
            path = Path(directory, name)
            if path.is_file():
                found[str(path)] = path.read_bytes()
    return found


def test_no_secret_reaches_the_database_dump_or_any_log(
    lab, sshd, celery_worker, test_database_url, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    tag = secrets.token_hex(4).upper()
    web = Web(test_database_url, tmp_path / "web.log")
    web.start()
    jenkins_token = f"JENKINSTOKEN{tag}{secrets.token_hex(12)}"
    standin = StandInJenkins(token=jenkins_token).start()
    standin.clock.run()
    try:
        passphrase = f"PASSPHRASE{tag}{secrets.token_hex(10)}"
        private_key = private_key_text(passphrase)
        vault_password = f"VAULTPW{tag}{secrets.token_hex(10)}"
        vault = make_machine(
            f"vault-{tag.lower()}", password=vault_password, private_key=private_key,
            passphrase=passphrase,
        )  # fmt: skip
        token_row, personal_token = make_api_token(lab.admin, name=f"ci-{tag}")
        _, ingest_token = ingest_token_create(machine=lab.machine, name=f"ingest-{tag}")
        key_lines = [line for line in private_key.splitlines() if "PRIVATE KEY" not in line]
        needles: dict[str, str] = {
            "machine password": sshd.password,
            "second machine password": vault_password,
            "private key": private_key.strip(),
            "passphrase": passphrase,
            "Jenkins API token": jenkins_token,
            "Jenkins basic auth": f"{standin.user}:{jenkins_token}",
            "personal API token": personal_token,
            "ingest token": ingest_token,
            "SECRET_KEY": settings.SECRET_KEY,
            **{
                f"FIELD_ENCRYPTION_KEYS[{i}]": k
                for i, k in enumerate(settings.FIELD_ENCRYPTION_KEYS)
            },
            # Each line of the key's body is key material on its own.
            **{f"private key line {i}": line for i, line in enumerate(key_lines) if len(line) > 40},
        }
        assert len(needles["machine password"]) >= 12, "the lab's password is too short to trace"

        # A run on the board, started over HTTP with the personal token.
        run_services.case_create(
            actor=lab.admin, name=f"leak-{tag.lower()}", kind="board",
            entry_point="smoke always_fail", files={}, board_labels=["sim"],
        )  # fmt: skip
        created = http(web, "POST", "/api/v1/runs/", personal_token,
                       {"case": f"leak-{tag.lower()}", "machine": lab.machine.name})  # fmt: skip
        run = wait_for(created["id"])
        assert run.outcome == RunOutcome.FAILED, run.status_message  # always_fail fails
        assert_gap_free(run)
        log_response = Client().get(
            f"/api/v1/runs/{run.pk}/log", HTTP_AUTHORIZATION=f"Bearer {personal_token}"
        )
        run_log = b"".join(log_response.streaming_content)  # type: ignore[attr-defined]
        assert b"smoke" in run_log

        # A Jenkins build followed by the worker, linked to the run, started with the token.
        standin.add_job("fw", parameters={TRIGGER_PARAMETER: ""}, duration=1.0,
                        script=[(0.0, f"building for {lab.machine.name}")])  # fmt: skip
        server = make_jenkins_server(url=standin.url, username=standin.user,
                                     api_token=jenkins_token, read_timeout=5)  # fmt: skip
        job = make_jenkins_job(server, "fw")
        build_id = http(web, "POST", "/api/v1/jenkins/builds/", personal_token,
                        {"job": job.pk, "run": run.pk})["id"]  # fmt: skip
        deadline = time.monotonic() + 90
        while not (build := JenkinsBuild.objects.get(pk=build_id)).is_done:
            assert time.monotonic() < deadline, build.status_message
            time.sleep(0.2)
        assert build.result == "SUCCESS", build.status_message
        server_check = Client()
        server_check.force_login(lab.admin)
        assert server_check.post(f"/api/v1/jenkins/servers/{server.pk}/check/").status_code == 200

        # An external runner reports with the ingest token.
        stamp = "2025-03-01 12:00:00.000000"
        script = {"file_path": "suite", "file_name": "master.py", "script": "print(1)\n"}
        http(web, "POST", "/api/v1/ingest/dry-run/", ingest_token, {
            "machine_name": lab.machine.name, "timestamp": stamp,
            "master_scenario": {**script, "scenarios": [
                {"file_path": "suite", "file_name": "scenario.py", "script": "pass\n",
                 "tests": [{"file_path": "suite", "file_name": "t1.py", "script": "pass\n"}]}]},
        })  # fmt: skip
        test = {"machine_name": lab.machine.name, "file_path": "suite", "file_name": "t1.py"}
        http(web, "POST", "/api/v1/ingest/test-start/", ingest_token,
             {**test, "timestamp_start": stamp})  # fmt: skip
        http(web, "POST", "/api/v1/ingest/test-stop/", ingest_token,
             {**test, "status": "passed", "timestamp_stop": stamp})  # fmt: skip

        # The pages that show machines and their credentials, as an admin sees them.
        admin = Client()
        admin.force_login(lab.admin)
        pages: dict[str, bytes] = {}
        for machine in (lab.machine, vault):
            page = admin.get(f"/admin/machines/machine/{machine.pk}/change/")
            assert page.status_code == 200 and machine.name.encode() in page.content
            pages[f"admin page of {machine.name}"] = page.content
            pages[f"API detail of {machine.name}"] = json.dumps(
                http(web, "GET", f"/api/v1/machines/{machine.pk}/", personal_token)
            ).encode()
        page = admin.get(f"/admin/jenkins/jenkinsserver/{server.pk}/change/")
        assert page.status_code == 200
        pages["admin page of the Jenkins server"] = page.content
    finally:
        standin.stop()
        web.stop()

    haystacks: dict[str, bytes] = {
        "database dump": database_dump(),
        "worker log": Path(celery_worker).read_bytes(),
        "web server log": (tmp_path / "web.log").read_bytes(),
        "this process's log records": "\n".join(
            f"{r.name} {r.getMessage()}" for r in caplog.records
        ).encode(),
        "run events": json.dumps(
            list(RunEvent.objects.filter(run=run).values("seq", "type", "data")), default=str
        ).encode(),
        "run log": run_log,
        "run status": TestRun.objects.get(pk=run.pk).status_message.encode(),
        "Jenkins console": build.console_text.encode(),
        **pages,
        **workspace_files(Path(lab.machine.effective_work_dir)),
    }

    # The check can see what it looks for: each haystack holds what a leak would sit next to.
    dump = haystacks["database dump"]
    assert len(dump) > 10_000
    for expected in (lab.machine.name, vault.name, f"leak-{tag.lower()}", f"ingest-{tag}",
                     "building for", TRIGGER_PARAMETER):  # fmt: skip
        assert expected.encode() in dump, expected
    # The credentials are there, encrypted: Fernet tokens (version byte 0x80 -> "gAAAAA").
    assert dump.count(b"gAAAAA") >= 4
    # The personal token is there as its hash and prefix only.
    assert hashlib.sha256(personal_token.encode()).hexdigest().encode() in dump
    assert token_row.prefix.encode() in dump
    assert b"run_execute" in haystacks["worker log"] or b"run" in haystacks["worker log"]
    assert b"POST /api/v1/runs/" in haystacks["web server log"]
    assert b"/api/v1/ingest/test-stop/" in haystacks["web server log"]
    workspace = [k for k in haystacks if k.startswith(str(lab.machine.effective_work_dir))]
    assert any(k.endswith("events.jsonl") for k in workspace), workspace
    assert b"always_fail" in haystacks["run events"]

    hits = [
        f"{name} found in {where}"
        for name, secret in needles.items()
        for form in variants(secret)
        for where, text in haystacks.items()
        if form in text
    ]
    assert hits == [], "\n".join(sorted(set(hits)))
