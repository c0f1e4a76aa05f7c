"""Run pages: start with inline errors, history with filters / pages / CSV, a run's page with
hostile text, its live stream and fallback, and its actions."""

from __future__ import annotations

import csv
import io
import json

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.urls import reverse

from test_runner.models import RunSource, RunStatus, TestRun
from test_runner.web import sse
from tests.unit.web.conftest import HOSTILE, sample_events, store

pytestmark = pytest.mark.django_db


def test_start_a_run_on_a_machine(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = world.client("alice").post(
            reverse("web:run-start"),
            {"case": "smoke", "machine": "lab-1", "parameters": "FIRMWARE=v1\nCHANNEL=2",
             "timeout": "60"},
        )  # fmt: skip
    run = TestRun.objects.latest("pk")
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert run.source == RunSource.UI and run.requested_by == world.alice
    assert run.parameters == {"FIRMWARE": "v1", "CHANNEL": "2"} and run.timeout == 60


def test_start_shows_service_errors_on_their_field(world):
    client = world.client("alice")
    # A board that the case does not use: the service says so, on the board field.
    response = client.post(
        reverse("web:run-start"),
        {"case": "smoke", "machine": "lab-1", "board": world.board.pk},
    )
    assert response.status_code == 400
    form = response.context["form"]
    assert "does not use a board" in form.errors["board"][0]
    # A bad parameter name, from the same service the API uses.
    response = client.post(
        reverse("web:run-start"), {"case": "smoke", "machine": "lab-1", "parameters": "1x=2"}
    )
    assert "Parameter name" in response.context["form"].errors["parameters"][0]
    # Neither machine nor label; and a line that is not NAME=value.
    response = client.post(reverse("web:run-start"), {"case": "smoke", "parameters": "oops"})
    errors = response.context["form"].errors
    assert "Line 1" in errors["parameters"][0]
    # Priority above 0 is for admins.
    response = client.post(
        reverse("web:run-start"), {"case": "smoke", "machine": "lab-1", "priority": "5"}
    )
    assert "priority" in response.context["form"].errors
    assert TestRun.objects.count() == 2  # nothing was started


def test_start_lists_only_what_the_user_may_use(world):
    page = world.client("bob").get(reverse("web:run-start")).content.decode()
    assert "lab-1" not in page and "No machine is assigned to you" in page
    response = world.client("bob").post(
        reverse("web:run-start"), {"case": "smoke", "machine": "lab-1"}
    )
    assert response.status_code == 400 and "machine" in response.context["form"].errors
    page = world.client("alice").get(reverse("web:run-start") + "?case=smoke").content.decode()
    assert "lab-1" in page and "2 / 2" in page  # two free slots


def test_run_page_renders_hostile_text_safely(world):
    page = world.client("alice").get(reverse("web:run-detail", args=[world.run.pk]))
    html = page.content.decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "\x1b" not in html and "red" in html  # colour codes stripped, text kept
    assert "more characters in the full log" in html  # a 10 000 character line is cut
    # The test tree, the parameters, the case's version.
    assert "test_one" in html and "test_two" in html and "Passed" in html
    assert "&quot;quoted&quot;" in html
    assert f'data-after="{world.run.last_seq}"' in html


def test_case_description_and_history_escape_hostile_text(world):
    html = world.client("alice").get(reverse("web:case-detail", args=[world.case.pk]))
    assert b"<script>alert" not in html.content
    TestRun.objects.filter(pk=world.run.pk).update(status_message=HOSTILE)
    history = world.client("alice").get(reverse("web:run-history")).content
    assert b"<script>alert" not in history


def test_live_fallback_gives_what_came_after_a_seq(world):
    client = world.client("alice")
    url = reverse("web:run-live", args=[world.live.pk])
    body = client.get(url, {"after": 0}).json()
    assert body["last_seq"] == 3 and [t["id"] for t in body["plan"]] == [
        "tests/test_a.py::test_one", "tests/test_a.py::test_two",
    ]  # fmt: skip
    assert body["tests"] == [{"id": "tests/test_a.py::test_one", "outcome": "running"}]
    assert body["state"]["status"] == "running" and body["state"]["planned"] == 2
    store(world.live, sample_events()[3:])
    later = client.get(url, {"after": body["last_seq"]}).json()
    assert [line["seq"] for line in later["lines"]] == [4, 6, 7]  # no heartbeat, no double
    assert "\x1b" not in later["lines"][0]["text"] and "<script>" in later["lines"][0]["text"]
    assert later["tests"][0]["outcome"] == "passed"
    assert client.get(url, {"after": "x"}).status_code == 400


async def _body(response) -> str:
    content = response.streaming_content
    return b"".join([chunk async for chunk in content]).decode()


def _stream(pk: int, user, after: int = 0, **headers) -> str:
    async def read() -> str:
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(f"/runs/{pk}/stream/", {"after": after}, headers=headers)
        assert response.status_code == 200
        assert response["Content-Type"] == "text/event-stream"
        return await _body(response)

    return async_to_sync(read)()


def _messages(text: str) -> list[tuple[str, dict, str | None]]:
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"]), fields.get("id")))
    return found


def test_stream_of_a_finished_run_sends_its_events_then_ends(world):
    messages = _messages(_stream(world.run.pk, world.alice))
    kinds = [kind for kind, _, _ in messages]
    assert kinds[0] == "delta" and kinds[-1] == "end"
    delta = messages[0][1]
    assert [line["seq"] for line in delta["lines"]] == [1, 3, 4, 6, 7]
    assert messages[0][2] == "7"  # the id a reconnecting browser sends back
    assert delta["state"]["finished"] and delta["state"]["status"] == "done"


def test_stream_resumes_after_the_last_seq_seen(world):
    messages = _messages(_stream(world.run.pk, world.alice, after=4))
    assert [line["seq"] for line in messages[0][1]["lines"]] == [6, 7]

    # The Last-Event-ID header an EventSource sends on reconnect works the same way.
    async def read() -> str:
        client = AsyncClient()
        await client.aforce_login(world.alice)
        url = f"/runs/{world.run.pk}/stream/"
        return await _body(await client.get(url, headers={"Last-Event-ID": "6"}))

    messages = _messages(async_to_sync(read)())
    assert [line["seq"] for line in messages[0][1]["lines"]] == [7]
    # Nothing new: only the state and the end.
    messages = _messages(_stream(world.run.pk, world.alice, after=7))
    assert [kind for kind, _, _ in messages] == ["state", "end"]


def test_stream_of_a_live_run_sends_new_events_as_they_are_stored(world):
    async def read() -> list[str]:
        chunks = []
        stream = sse.run_events_stream(world.live.pk, 3, __import__("datetime").UTC, max_seconds=5)
        async for chunk in stream:
            chunks.append(chunk)
            if "event: state" in chunk:
                from asgiref.sync import sync_to_async

                await sync_to_async(store)(world.live, sample_events()[3:])
            if "event: delta" in chunk:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return chunks

    chunks = async_to_sync(read)()
    delta = _messages("".join(chunks))[-1][1]
    assert [line["seq"] for line in delta["lines"]] == [4, 6, 7]


def test_cancel_and_retry_from_the_page(world, django_capture_on_commit_callbacks):
    client = world.client("alice")
    response = client.post(reverse("web:run-action", args=[world.live.pk, "cancel"]))
    assert response.status_code == 302
    world.live.refresh_from_db()
    assert world.live.cancel_requested
    # A finished run cannot be cancelled: the service's message is shown, nothing breaks.
    response = client.post(reverse("web:run-action", args=[world.run.pk, "cancel"]), follow=True)
    assert "has already finished" in response.content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("web:run-action", args=[world.run.pk, "retry"]))
    retry = TestRun.objects.get(retry_of=world.run)
    assert response["Location"] == f"/runs/{retry.pk}/" and retry.status == RunStatus.QUEUED
    page = client.get(response["Location"]).content.decode()
    assert "it is next" in page or "ahead of it" in page  # its place in the queue
    assert client.post(reverse("web:run-action", args=[world.run.pk, "explode"])).status_code == 404


def test_admin_controls_anyones_run(world):
    response = world.client("admin").post(reverse("web:run-action", args=[world.live.pk, "cancel"]))
    assert response.status_code == 302
    world.live.refresh_from_db()
    assert world.live.cancel_requested


def test_history_filters_sorts_pages_and_searches(world, django_capture_on_commit_callbacks):
    from test_runner import services

    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(30):
            services.run_create(actor=world.alice, case=world.case, machine=world.machine)
    client = world.client("alice")
    page = client.get(reverse("web:run-history"))
    assert page.context["page"].paginator.count == 32
    assert len(page.context["page"].object_list) == 25
    second = client.get(reverse("web:run-history"), {"page": 2})
    assert len(second.context["page"].object_list) == 7
    done = client.get(reverse("web:run-history"), {"outcome": "passed"}).context["page"]
    assert [r.pk for r in done.object_list] == [world.run.pk]
    running = client.get(reverse("web:run-history"), {"status": "running"}).context["page"]
    assert [r.pk for r in running.object_list] == [world.live.pk]
    oldest = client.get(reverse("web:run-history"), {"sort": "queued_at"}).context["page"]
    assert oldest.object_list[0].pk == world.run.pk
    found = client.get(reverse("web:run-history"), {"q": str(world.live.pk)}).context["page"]
    assert [r.pk for r in found.object_list] == [world.live.pk]
    none = client.get(reverse("web:run-history"), {"machine": "nope"})
    assert "No run matches" in none.content.decode()
    dated = client.get(reverse("web:run-history"), {"since": "2000-01-01", "until": "2000-01-02"})
    assert dated.context["page"].paginator.count == 0
    bad = client.get(reverse("web:run-history"), {"since": "not-a-date"})
    assert bad.status_code == 400 and "Enter a valid date" in bad.content.decode()


def test_history_is_mine_for_users_and_everyones_for_admins(
    world, django_capture_on_commit_callbacks
):
    from test_runner import services

    world.machine.users.add(world.bob)
    with django_capture_on_commit_callbacks(execute=False):
        bobs = services.run_create(actor=world.bob, case=world.case, machine=world.machine)
    alice_sees = world.client("alice").get(reverse("web:run-history")).context["page"]
    assert bobs.pk not in [r.pk for r in alice_sees.object_list]
    admin = world.client("admin")
    assert admin.get(reverse("web:run-history")).context["page"].paginator.count == 3
    only_bob = admin.get(reverse("web:run-history"), {"user": "bob"}).context["page"]
    assert [r.pk for r in only_bob.object_list] == [bobs.pk]
    mine = admin.get(reverse("web:run-history"), {"mine": "on"}).context["page"]
    assert mine.paginator.count == 0


def test_csv_export_follows_the_filters_and_defuses_formulas(world):
    TestRun.objects.filter(pk=world.run.pk).update(status_message='=HYPERLINK("http://x")')
    response = world.client("alice").get(
        reverse("web:run-history"), {"outcome": "passed", "format": "csv"}
    )
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][0] == "id" and len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["id"] == str(world.run.pk) and row["outcome"] == "passed"
    assert row["duration_s"] == "75.0" and row["requested_by"] == "alice"
    assert row["status_message"].startswith("'=")
