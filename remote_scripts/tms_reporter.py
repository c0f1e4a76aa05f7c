"""Reports a suite's progress to the test management system: the plan, then each test's start
and stop. Standard library only, Python >= 3.9; import it from the suite's runner::

    from tms_reporter import Reporter

    reporter = Reporter("https://tms.lab.example", token, "bench-3", spool="/var/tmp/tms-spool")
    reporter.dry_run(master)  # {"file_path", "file_name", "script", "scenarios": [...]}
    reporter.test_start("/suite/tests", "01_01_test_lamp.py")
    reporter.test_stop("/suite/tests", "01_01_test_lamp.py", "passed")

Connection errors, 5xx and 429 answers are retried with a growing pause; other 4xx answers are
the message's fault and raise ``ReportError`` at once. With ``spool`` set, a message that still
could not be delivered is kept in that folder and sent, in order, before the next one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional

PATHS = {
    "dry_run": "/api/v1/ingest/dry-run/",
    "test_start": "/api/v1/ingest/test-start/",
    "test_stop": "/api/v1/ingest/test-stop/",
}
STATUSES = ("passed", "failed", "error", "warning", "cancelled", "unknown")


class ReportError(Exception):
    """The server refused a message (a 4xx other than 429): retrying would not help."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Unreachable(Exception):
    """Every attempt failed on the connection or a 5xx/429 answer."""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Reporter:
    def __init__(
        self,
        url: str,
        token: str,
        machine_name: str,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        spool: Optional[str] = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.machine_name = machine_name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.spool = spool
        if spool:
            os.makedirs(spool, exist_ok=True)

    # --- The three messages ---------------------------------------------------------------

    def dry_run(self, master: Dict[str, Any], timestamp: Optional[str] = None) -> Dict[str, Any]:
        body = {"machine_name": self.machine_name, "timestamp": timestamp or now(),
                "master_scenario": master}  # fmt: skip
        return self.send("dry_run", body)

    def test_start(
        self, file_path: str, file_name: str, timestamp: Optional[str] = None
    ) -> Dict[str, Any]:
        body = {"machine_name": self.machine_name, "file_path": file_path,
                "file_name": file_name, "timestamp_start": timestamp or now()}  # fmt: skip
        return self.send("test_start", body)

    def test_stop(
        self, file_path: str, file_name: str, status: str, timestamp: Optional[str] = None
    ) -> Dict[str, Any]:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        body = {"machine_name": self.machine_name, "file_path": file_path,
                "file_name": file_name, "status": status,
                "timestamp_stop": timestamp or now()}  # fmt: skip
        return self.send("test_stop", body)

    # --- Delivery -------------------------------------------------------------------------

    def send(self, kind: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """Delivers the spooled messages, then this one. Undeliverable with a spool: kept
        there (returns {"spooled": True}); without one: raises Unreachable."""
        try:
            self.flush()
            return self._deliver(kind, body)
        except Unreachable:
            if not self.spool:
                raise
            self._spool(kind, body)
            return {"spooled": True}

    def flush(self) -> int:
        """Sends what the spool holds, oldest first; returns how many were sent."""
        sent = 0
        for name in self._spooled():
            path = os.path.join(self.spool or "", name)
            with open(path, encoding="utf-8") as f:
                message = json.load(f)
            # A refused one (e.g. its run was closed meanwhile) would be refused again: drop it.
            with contextlib.suppress(ReportError):
                self._deliver(message["kind"], message["body"])
            os.remove(path)
            sent += 1
        return sent

    def _spooled(self) -> List[str]:
        if not self.spool:
            return []
        return sorted(n for n in os.listdir(self.spool) if n.endswith(".json"))

    def _spool(self, kind: str, body: Dict[str, Any]) -> None:
        name = f"{time.time_ns():020d}-{kind}.json"
        tmp = os.path.join(self.spool or "", name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"kind": kind, "body": body}, f)
        os.replace(tmp, os.path.join(self.spool or "", name))

    def _deliver(self, kind: str, body: Dict[str, Any]) -> Dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
            request = urllib.request.Request(  # noqa: S310  # the server's URL, http(s)
                self.url + PATHS[kind], data=data, method="POST",
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {self.token}"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    answer: Dict[str, Any] = json.loads(response.read() or b"{}")
                    return answer
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")[:2000]
                if exc.code != 429 and exc.code < 500:
                    raise ReportError(exc.code, text) from None
                last = f"HTTP {exc.code}: {text}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
        raise Unreachable(f"{kind} not delivered after {self.retries + 1} attempts: {last}")
