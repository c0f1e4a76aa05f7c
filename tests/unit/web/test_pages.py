"""Dashboard, test cases, machines and boards, Jenkins builds: what they show and their forms."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from machines.models import AuditEntry, Board
from test_runner.models import RunOutcome, TestCase, TestResult
from test_runner.web import selectors as web_selectors
from tests.factories import make_jenkins_job, make_jenkins_server
from tests.unit.web.conftest import HOSTILE, finish

pytestmark = pytest.mark.django_db


def test_dashboard_shows_progress_machines_charts_and_empty_states(world):
    html = world.client("alice").get(reverse("home")).content.decode()
    assert "Runs in progress" in html and f"/runs/{world.live.pk}/" in html
    assert 'aria-label="0 of 2 tests done"' in html  # the live run: planned, none done yet
    assert "lab-1" in html and "2 / 2" in html
    assert "Pass rate per day" in html and "1 of 1 runs passed (100%)" in html
    assert "No flaky tests" in html
    empty = world.client("bob").get(reverse("home")).content.decode()
    assert "Nothing is running or queued right now." in empty
    assert "You have not started a run yet." in empty and "No machine is assigned" in empty


def test_flaky_tests_are_those_that_flip_twice(world, django_capture_on_commit_callbacks):
    from test_runner import services

    outcomes = ["passed", "failed", "passed", "passed"]
    steady = ["failed", "failed", "passed", "passed"]  # broke, then fixed: one flip
    for flaky_outcome, steady_outcome in zip(outcomes, steady, strict=True):
        with django_capture_on_commit_callbacks(execute=False):
            run = services.run_create(actor=world.alice, case=world.case, machine=world.machine)
        TestResult.objects.create(run=run, test_id="t::flaky", name="flaky", outcome=flaky_outcome)
        TestResult.objects.create(
            run=run, test_id="t::steady", name="steady", outcome=steady_outcome
        )
        run.planned = 2
        run.save(update_fields=["planned"])
        finish(run, RunOutcome.FAILED if "failed" in (flaky_outcome, steady_outcome) else "passed")
    flaky = web_selectors.flaky_tests(user=world.alice)
    assert [(f.name, f.flips) for f in flaky] == [("flaky", 2)]
    assert web_selectors.flaky_tests(user=world.bob) == []  # not bob's runs
    html = world.client("alice").get(reverse("home")).content.decode()
    assert "flaky" in html and "Flips" in html


def test_create_and_edit_a_case_keeps_versions(world):
    client = world.client("alice")
    response = client.post(
        reverse("web:case-create"),
        {"name": "uart-check", "kind": "script", "entry_point": "check.py", "default_timeout": 60,
         "labels": "rack, nightly", "file_path": "check.py", "file_content": "print(1)\n",
         "uploads": [SimpleUploadedFile("helper.py", b"X = 1\n")]},
    )  # fmt: skip
    case = TestCase.objects.get(name="uart-check")
    assert case.current_version is not None
    assert response.status_code == 302 and response["Location"] == f"/cases/{case.pk}/"
    assert case.current_version.files == {"check.py": "print(1)\n", "helper.py": "X = 1\n"}
    assert sorted(case.labels.values_list("name", flat=True)) == ["nightly", "rack"]
    edit = reverse("web:case-edit", args=[case.pk])
    form = client.get(edit).content.decode()
    assert "helper.py" in form and "check.py" in form
    response = client.post(
        edit,
        {"name": "uart-check", "kind": "script", "entry_point": "check.py", "default_timeout": 60,
         "remove": ["helper.py"], "change_note": "drop the helper"},
    )  # fmt: skip
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.current_version is not None
    assert case.current_version.number == 2 and case.current_version.files == {
        "check.py": "print(1)\n"
    }
    detail = client.get(reverse("web:case-detail", args=[case.pk])).content.decode()
    assert "v1" in detail and "v2" in detail and "drop the helper" in detail
    old = client.get(reverse("web:case-detail", args=[case.pk]), {"version": 1}).content.decode()
    assert "helper.py" in old


def test_case_form_shows_service_errors_inline(world):
    client = world.client("alice")
    response = client.post(
        reverse("web:case-create"),
        {"name": "bad", "kind": "script", "entry_point": "missing.py", "default_timeout": 60},
    )
    assert response.status_code == 400
    assert "not among the files" in response.context["form"].errors["entry_point"][0]
    response = client.post(
        reverse("web:case-create"),
        {"name": "../x", "kind": "script", "entry_point": "a.py", "default_timeout": 60},
    )
    assert "name" in response.context["form"].errors
    response = client.post(
        reverse("web:case-create"),
        {"name": "dup", "kind": "script", "entry_point": "a.py", "default_timeout": 60,
         "file_path": "../../etc/passwd", "file_content": "x"},
    )  # fmt: skip
    assert "must be relative" in response.context["form"].errors["file_path"][0]
    response = client.post(
        reverse("web:case-create"),
        {"name": "smoke", "kind": "script", "entry_point": "a.py", "default_timeout": 60,
         "file_path": "a.py", "file_content": "x"},
    )  # fmt: skip
    assert response.status_code == 400 and "already exists" in response.content.decode()
    assert not TestCase.objects.filter(name__in=["bad", "dup"]).exists()


def test_machine_page_shows_pool_boards_and_holders(world):
    Board.objects.filter(pk=world.board.pk).update(
        lease_holder=f"run:{world.live.pk}", lease_expires_at=world.live.queued_at
    )
    html = world.client("alice").get(reverse("lab:machine-detail", args=[world.machine.pk]))
    text = html.content.decode()
    assert "Venv pool" in text and "Ready" in text and f"/runs/{world.live.pk}/" in text
    boards = world.client("admin").get(reverse("lab:board-list")).content.decode()
    assert f"run #{world.live.pk}" in boards and "Lock" in boards


def test_admin_maintenance_and_board_lock_are_audited(world):
    client = world.client("admin")
    response = client.post(
        reverse("lab:machine-maintenance", args=[world.machine.pk]), {"on": "1", "reason": HOSTILE}
    )
    assert response.status_code == 302
    world.machine.refresh_from_db()
    assert world.machine.maintenance
    page = client.get(reverse("lab:machine-detail", args=[world.machine.pk])).content.decode()
    assert "In maintenance" in page and "<script>alert" not in page
    client.post(reverse("lab:machine-maintenance", args=[world.machine.pk]), {"on": "0"})
    world.machine.refresh_from_db()
    assert not world.machine.maintenance
    client.post(reverse("lab:board-lock", args=[world.board.pk]), {"locked": "1"})
    world.board.refresh_from_db()
    assert world.board.locked
    actions = set(AuditEntry.objects.filter(source="web").values_list("action", flat=True))
    assert {"machine.maintenance_on", "machine.maintenance_off"} <= actions
    response = client.post(reverse("lab:machine-pool", args=[world.machine.pk]), {"size": "0"})
    assert "from 1 to 64" in client.get(response["Location"]).content.decode()


def test_admin_check_of_an_unreachable_machine_says_why(world):
    from machines.models import Machine

    Machine.objects.filter(pk=world.machine.pk).update(hostname="127.0.0.1", port=9)
    response = world.client("admin").post(
        reverse("lab:machine-check", args=[world.machine.pk]), follow=True
    )
    assert response.status_code == 200
    assert "offline" in response.content.decode()
    page = world.client("admin").get(reverse("lab:machine-trust", args=[world.machine.pk]))
    assert page.status_code == 200 and "Could not read the host key" in page.content.decode()


def test_jenkins_builds_list_and_console_render_safely(world):
    from jenkins.models import JenkinsBuild

    job = make_jenkins_job(make_jenkins_server())
    build = JenkinsBuild.objects.create(
        job=job, trigger_id="t-1", triggered_by=world.alice, number=7,
        console_text=f"step one\n{HOSTILE}\n", console_offset=40, url="javascript:alert(1)",
        parameters={"BRANCH": HOSTILE},
    )  # fmt: skip
    client = world.client("bob")  # builds are shared in a lab
    listing = client.get(reverse("ci:build-list")).content.decode()
    assert "#7" in listing
    detail = client.get(reverse("ci:build-detail", args=[build.pk])).content.decode()
    assert "step one" in detail and "<script>alert" not in detail and "\x1b" not in detail
    assert 'href="javascript:' not in detail
    assert f'data-offset="{build.console_length}"' in detail
    assert "Cancel build" not in detail  # bob did not trigger it
    response = client.post(reverse("ci:build-cancel", args=[build.pk]), follow=True)
    assert "Only whoever triggered this build" in response.content.decode()
    assert world.client("alice").get(reverse("ci:build-list"), {"mine": "1"}).status_code == 200
    empty = world.client("bob").get(reverse("ci:build-list"), {"mine": "1"}).content.decode()
    assert "No Jenkins builds match these filters" in empty
