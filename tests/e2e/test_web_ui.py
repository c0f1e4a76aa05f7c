"""The web UI in a real browser (Debian's Chromium, headless, driven by Playwright) against the
real server (uvicorn), a real Celery worker, the loopback sshd as a lab machine with a warm
venv pool, and the board simulator on a pty.

Screenshots of the main pages land in tests/artifacts/ (git-ignored) for people to look at.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_runner import services
from test_runner.models import RunOutcome, TestRun
from tests.conftest import REPO_ROOT, REQUIRE_SERVICES, free_port, stop_process, subprocess_env
from tests.integration.conftest import sshd  # noqa: F401  # fixtures used by the lab
from tests.integration.runs.conftest import board_sim, lab, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
PASSWORD = "pw-123456789"  # tests.factories.make_user's
# Prints a line with the time it was printed, so that the page can tell how late it shows it.
TICKER = textwrap.dedent(
    """
    import time
    for i in range(12):
        print(f"tick {i} at {time.time():.3f}", flush=True)
        time.sleep(0.4)
    print("<script>alert('x')</script> \\x1b[31mred\\x1b[0m done", flush=True)
    """
)
SLEEPER = textwrap.dedent(
    """
    import time
    print("sleeping", flush=True)
    for _ in range(600):
        time.sleep(0.1)
    """
)


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"TMS_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[object]:
    """One browser for this module (the server, and so the test database, come first).

    Playwright's sync API keeps an event loop in this thread while it is open: the database
    calls of these tests are plain blocking ones all the same, so Django is told to allow
    them, and only for as long as the browser lives.
    """
    _need(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install -r requirements-dev.txt)")
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            yield browser
            browser.close()
    finally:
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture(scope="session")
def server(test_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("web") / "uvicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "test_management_system.asgi:application",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=REPO_ROOT, env=subprocess_env(DATABASE_URL=test_database_url),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health/", timeout=2):  # noqa: S310  # loopback
                    break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the web server did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def page(browser, server):
    context = browser.new_context(
        base_url=server, viewport={"width": 1400, "height": 1000}, timezone_id="Europe/Paris"
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:  # the "Cancel run?" confirmation; and any alert() that ran
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", on_dialog)
    page.dialogs = dialogs
    yield page
    shot(page, "zz-last-page")  # where the test ended, to look at when it failed
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, username: str) -> None:
    page.goto("/accounts/login/")
    shot(page, "00-sign-in")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def start_run(page, case_name: str, machine: str) -> int:
    page.goto("/runs/new/")
    page.get_by_label("Case").select_option(case_name)
    page.get_by_label("Machine").select_option(machine)
    shot(page, "02-start-a-run")
    page.get_by_role("button", name="Start the run").click()
    page.wait_for_url("**/runs/*/")
    return int(page.url.rstrip("/").rsplit("/", 1)[1])


def test_start_watch_live_finish_cancel_filter_and_machine(page, lab):  # noqa: F811
    user = lab.admin.get_username()
    services.case_create(
        actor=lab.admin, name="ticker", kind="script", entry_point="main.py",
        files={"main.py": TICKER}, description="Prints a dozen lines <b>slowly</b>.",
    )  # fmt: skip
    services.case_create(
        actor=lab.admin, name="sleeper", kind="script", entry_point="main.py",
        files={"main.py": SLEEPER},
    )  # fmt: skip
    sign_in(page, user)

    # Start a run in the browser and watch its log grow line by line.
    run_id = start_run(page, "ticker", lab.machine.name)
    page.evaluate(
        """() => { window.arrivals = [];
          new MutationObserver(() => {
            document.querySelectorAll('#log .line:not([data-seen])').forEach((el) => {
              el.setAttribute('data-seen', '1');
              window.arrivals.push([el.textContent, Date.now() / 1000]);
            });
          }).observe(document.getElementById('log'), {childList: true}); }"""
    )
    log = page.locator("#log")
    log.get_by_text("tick 2 at").wait_for()
    seen_early = log.locator(".line").count()
    shot(page, "03-run-live")
    log.get_by_text("tick 11 at").wait_for()
    assert log.locator(".line").count() > seen_early  # it grew while we watched
    page.locator("#run-summary .badge.passed").wait_for(timeout=60_000)
    page.locator("#live-status", has_text="finished").wait_for()
    run = TestRun.objects.get(pk=run_id)
    assert run.outcome == RunOutcome.PASSED and run.source == "ui"
    # Hostile output is text, not markup; colour codes are gone.
    assert page.locator("#log").get_by_text("<script>alert('x')</script> red done").count() == 1
    assert "x" not in page.dialogs  # the script in the log never ran
    # Each line shown once, in order, although the stream may have been reopened.
    seqs = [int(s) for s in log.locator(".line").evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == sorted(set(seqs))
    delays = []
    for text, at in page.evaluate("() => window.arrivals"):
        if text.startswith("tick") or " tick " in text:
            printed = float(text.rsplit(" at ", 1)[1].split()[0])
            delays.append(at - printed)
    if delays:
        print(  # the figure for people reading the test log
            f"\nlog latency (runner prints -> line visible) over {len(delays)} lines: median "
            f"{statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
        )
    shot(page, "04-run-passed")

    # Cancel another mid-run.
    sleeper_id = start_run(page, "sleeper", lab.machine.name)
    page.locator("#log").get_by_text("sleeping").wait_for(timeout=60_000)
    page.get_by_role("button", name="Cancel run").click()
    page.locator("#run-summary .badge.cancelled").wait_for(timeout=60_000)
    assert wait_for(sleeper_id).outcome == RunOutcome.CANCELLED
    shot(page, "05-run-cancelled")

    # Find them in history, filtered.
    page.goto("/runs/")
    assert page.locator("table.table tbody tr").count() == 2
    page.get_by_label("Outcome").select_option("passed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/runs/?*outcome=passed*")
    rows = page.locator("table.table tbody tr")
    assert rows.count() == 1 and f"#{run_id}" in rows.first.inner_text()
    shot(page, "06-history-filtered")

    # The dashboard, the case, the machine.
    page.goto("/")
    page.get_by_role("heading", name="Dashboard").wait_for()
    shot(page, "01-dashboard")
    page.goto("/cases/")
    page.get_by_role("link", name="ticker").click()
    page.get_by_role("heading", name="Versions").wait_for()
    assert page.get_by_text("Prints a dozen lines <b>slowly</b>.").count() == 1
    shot(page, "07-case")
    page.goto("/machines/")
    page.get_by_role("link", name=lab.machine.name).first.click()
    page.get_by_role("heading", name="Venv pool").wait_for()
    assert page.get_by_text("Admin actions").count() == 1
    # Both pool slots are listed (ready, or being reset after the cancelled run).
    pool = page.get_by_role("region", name="Venv pool").locator("tbody tr")
    assert pool.count() == 2
    shot(page, "08-machine")
    page.goto("/boards/")
    shot(page, "09-boards")
    assert page.get_by_role("heading", name="Boards").count() == 1
