"""Every page, as anonymous / another user / the owner / an admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _pages(w) -> list[str]:
    return [
        reverse("home"),
        reverse("web:dashboard"),
        reverse("web:run-history"),
        reverse("web:run-start"),
        reverse("web:run-detail", args=[w.run.pk]),
        reverse("web:run-summary", args=[w.run.pk]),
        reverse("web:run-tests", args=[w.run.pk]),
        reverse("web:run-live", args=[w.run.pk]),
        reverse("web:case-list"),
        reverse("web:case-detail", args=[w.case.pk]),
        reverse("web:case-create"),
        reverse("web:case-edit", args=[w.case.pk]),
        reverse("lab:machine-list"),
        reverse("lab:machine-detail", args=[w.machine.pk]),
        reverse("lab:board-list"),
        reverse("ci:build-list"),
    ]


def test_anonymous_is_sent_to_sign_in_everywhere(world):
    client = world.client(None)
    for url in _pages(world)[1:]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url
    # The home page is the public landing page.
    response = client.get(reverse("home"))
    assert response.status_code == 200 and b"Sign in" in response.content
    response = client.get(reverse("web:run-stream", args=[world.run.pk]))
    assert response.status_code == 302


def test_owner_and_admin_see_every_page(world):
    for who in ("alice", "admin"):
        client = world.client(who)
        for url in _pages(world):
            response = client.get(url)
            assert response.status_code == 200, (who, url, response.status_code)


def test_another_user_gets_404_for_someone_elses_run_and_machine(world):
    client = world.client("bob")
    for name in ("web:run-detail", "web:run-summary", "web:run-tests", "web:run-live"):
        assert client.get(reverse(name, args=[world.run.pk])).status_code == 404, name
    assert client.get(reverse("web:run-stream", args=[world.run.pk])).status_code == 404
    assert client.get(reverse("lab:machine-detail", args=[world.machine.pk])).status_code == 404
    # Cases are shared, but only their owner (or an admin) edits them.
    assert client.get(reverse("web:case-detail", args=[world.case.pk])).status_code == 200
    assert client.get(reverse("web:case-edit", args=[world.case.pk])).status_code == 403
    # Lists show nothing of alice's.
    history = client.get(reverse("web:run-history")).content.decode()
    assert f"#{world.run.pk}<" not in history and "No run matches" in history
    machines = client.get(reverse("lab:machine-list")).content.decode()
    assert "lab-1" not in machines and "No machine is assigned to you" in machines
    boards = client.get(reverse("lab:board-list")).content.decode()
    assert "<td>b1</td>" not in boards and "No boards." in boards


def test_other_users_cannot_control_a_run(world):
    client = world.client("bob")
    for action in ("cancel", "retry", "pause", "resume"):
        url = reverse("web:run-action", args=[world.live.pk, action])
        assert client.post(url).status_code == 404
    world.live.refresh_from_db()
    assert not world.live.cancel_requested


def test_actions_need_post_and_a_csrf_token(world):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(world.alice)
    url = reverse("web:run-action", args=[world.live.pk, "cancel"])
    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 403  # no CSRF token
    world.live.refresh_from_db()
    assert not world.live.cancel_requested


def test_machine_admin_actions_are_for_admins_only(world):
    client = world.client("alice")
    for name in ("lab:machine-check", "lab:machine-pool", "lab:machine-maintenance"):
        assert client.post(reverse(name, args=[world.machine.pk])).status_code == 403, name
    assert client.get(reverse("lab:machine-trust", args=[world.machine.pk])).status_code == 403
    assert client.post(reverse("lab:board-lock", args=[world.board.pk])).status_code == 403
    world.machine.refresh_from_db()
    assert not world.machine.maintenance
    page = client.get(reverse("lab:machine-detail", args=[world.machine.pk])).content.decode()
    assert "Admin actions" not in page


def test_secrets_are_never_rendered(world):
    from tests.factories import PASSWORD

    for who in ("alice", "admin"):
        page = world.client(who).get(reverse("lab:machine-detail", args=[world.machine.pk]))
        assert PASSWORD not in page.content.decode()
        listing = world.client(who).get(reverse("lab:machine-list"))
        assert PASSWORD not in listing.content.decode()
