"""pytest plugin loaded by the runner in pytest mode (``-p remote_scripts.tms_pytest_plugin``).

* Reports to the runner through the child channel (``TMS_CHILD_EVENTS``): the plan (every
  collected test, before any runs), each test's start and end (outcome, duration, failure
  text) and its captured output, collection errors, board status and serial traffic.
* Gives tests a ``board`` fixture: a ``BoardLink`` on the run's serial port (``send``,
  ``expect(pattern, timeout)``, ``read_frames``, ``request``). The port is opened once per
  session; frames left over from the previous test are dropped when a test starts.

Outcomes: passed, failed, error (setup/teardown failed), skipped, xfailed, xpassed.
Without ``TMS_CHILD_EVENTS`` the plugin only provides the fixture.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest

from remote_scripts.events import ChildChannel, SerialTap, clip
from remote_scripts.serial_link import BoardLink, SerialConfig

MAX_TEXT = 8192
MAX_CAPTURE = 16384


class _Reporter:
    def __init__(self, channel: ChildChannel) -> None:
        self.channel = channel
        self.tap = SerialTap(channel.emit)
        self.phases: Dict[str, List[Any]] = {}

    def emit(self, type_: str, fields: Dict[str, Any]) -> None:
        self.channel.emit(type_, fields)


_reporter: Optional[_Reporter] = None


def _watch_parent(parent_pid: int) -> None:
    """End this process group if the runner dies (POSIX): the port must not stay held."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            try:
                os.killpg(os.getpgrp(), signal.SIGTERM)
            except OSError:
                os._exit(70)


def pytest_configure(config: Any) -> None:
    global _reporter
    channel = ChildChannel.from_env()
    if channel.active:
        _reporter = _Reporter(channel)
    parent = os.environ.get("TMS_PARENT_PID", "")
    if os.name == "posix" and parent.isdigit() and os.getpgrp() == os.getpid():
        threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True).start()


def pytest_unconfigure(config: Any) -> None:
    global _reporter
    if _reporter is not None:
        _reporter.tap.close()
        _reporter.channel.close()
        _reporter = None


def pytest_collectreport(report: Any) -> None:
    if _reporter is not None and report.failed:
        text = clip(str(report.longreprtext), MAX_TEXT)[0]
        _reporter.emit("error", {"kind": "collection", "message": text, "test": report.nodeid})


def pytest_collection_finish(session: Any) -> None:
    if _reporter is None:
        return
    tests = []
    for item in session.items:
        path, line, _ = item.location
        tests.append({"id": item.nodeid, "name": item.name, "file": path, "line": line})
    _reporter.emit("plan", {"tests": tests})


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    if _reporter is not None:
        _reporter.phases[nodeid] = []
        _reporter.emit("test_start", {"test": nodeid})


def pytest_runtest_logreport(report: Any) -> None:
    if _reporter is None:
        return
    _reporter.phases.setdefault(report.nodeid, []).append(report)
    # Each phase report carries the sections of the phases before it too: take its own.
    for title, text in report.sections:
        if not title.endswith(" " + report.when) or not text:
            continue
        stream = "stderr" if "stderr" in title else "log" if " log " in title else "stdout"
        text, cut = clip(text, MAX_CAPTURE)
        fields = {
            "source": "test",
            "stream": stream,
            "level": "WARNING" if stream == "stderr" else "INFO",
            "message": text,
            "test": report.nodeid,
            "phase": report.when,
        }
        if cut:
            fields["truncated"] = True
        _reporter.emit("log", fields)


def _outcome(reports: List[Any]) -> Any:
    outcome, message = "passed", ""
    for r in reports:
        wasxfail = hasattr(r, "wasxfail")
        if r.failed:
            if r.when == "call":
                return "failed", r.longreprtext
            return "error", "%s failed: %s" % (r.when, r.longreprtext)
        if r.skipped:
            if wasxfail:
                return "xfailed", str(r.wasxfail)
            reason = r.longrepr[2] if isinstance(r.longrepr, tuple) else str(r.longrepr)
            return "skipped", reason
        if r.when == "call" and wasxfail:
            outcome, message = "xpassed", str(r.wasxfail)
    return outcome, message


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    if _reporter is None:
        return
    reports = _reporter.phases.pop(nodeid, [])
    outcome, message = _outcome(reports)
    text, cut = clip(str(message or ""), MAX_TEXT)
    fields = {
        "test": nodeid,
        "outcome": outcome,
        "duration_s": round(sum(r.duration for r in reports), 6),
        "message": text,
    }
    if cut:
        fields["truncated"] = True
    _reporter.tap.flush(force=True)
    _reporter.emit("test_end", fields)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def board_link() -> Iterator[BoardLink]:
    """The session's link to the board (opened once)."""
    config = SerialConfig.from_env()
    kwargs: Dict[str, Any] = {}
    if _reporter is not None:
        reporter = _reporter

        def on_status(state: str, info: Dict[str, Any]) -> None:
            reporter.emit("board_status", dict(info, state=state, source="link"))
            if state == "lost":
                reporter.emit("error", {"kind": "board", "message": info.get("error", "")})

        kwargs = {"on_status": on_status, "on_traffic": reporter.tap.feed}
    link = BoardLink(config, **kwargs)
    link.open()
    try:
        yield link
    finally:
        link.close()


@pytest.fixture
def board(board_link: BoardLink) -> BoardLink:
    """The board, with frames from before this test dropped."""
    board_link.drain()
    return board_link
