"""A stand-in Jenkins: the parts of the REST API that python-jenkins 1.8.3 and our client use.

It is the only Jenkins the code meets before production, so it keeps Jenkins' wire format and
its awkward corners (checked against python-jenkins' source and the Jenkins REST API):

* ``X-Jenkins`` on every answer; ``GET /`` for the version; ``me/api/json`` for whoami.
* Basic auth with a user and API token; anything else is 401.
* The crumb issuer (``crumbIssuer/api/json``) and POSTs refused (403) without the crumb; with
  ``crumbs=False`` the issuer answers 404 and no crumb is needed.
* Folders: ``job/a/job/b/...``, each name URL-quoted.
* ``build`` / ``buildWithParameters`` -> 201 + ``Location: <base>/queue/item/N/``; 400 for a
  parameterized job hit on ``build``; 500 for a job without parameters hit on
  ``buildWithParameters``; 409 for a disabled job; 303 to the waiting item when the same
  parameters are already queued (which python-jenkins cannot follow). Parameters the job does
  not define are dropped, as Jenkins does.
* Queue items: ``$WaitingItem`` (quiet period) -> ``$BuildableItem`` -> ``$LeftItem`` with
  ``cancelled`` and ``executable {number, url}``; ``executable`` null for a while after the item
  left; left items 404 five (simulated) minutes later.
* Builds that run by a script of console lines and finish with any result; ``result`` set while
  ``building`` is still true at the very end; ``logText/progressiveText`` with ``X-Text-Size`` and
  ``X-More-Data``; ``consoleText``; ``testReport/api/json`` (404 when there is none); ``stop``;
  ``queue/cancelItem``.
* Faults: ``slow`` (answers after a delay), ``error`` (500 on every path matching a pattern) and
  ``stop()`` (the port refuses connections until ``start()``).

Time is a ``Clock`` the tests can move forward, so "five minutes later" takes no time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

VERSION = "2.462.3"
LEFT_ITEM_TTL = 300.0  # Jenkins forgets a left queue item after five minutes.
CLASS_PREFIX = "hudson.model.Queue$"


class Clock:
    """Stand-in time: stands still and moves only when a test advances it, or, once
    ``running`` (for tests where another process polls), also moves with wall time."""

    def __init__(self) -> None:
        self.start = time.time()
        self.offset = 0.0
        self.running = False
        self._started_running = 0.0

    def run(self) -> None:
        self.running, self._started_running = True, time.monotonic()

    def now(self) -> float:
        ran = time.monotonic() - self._started_running if self.running else 0.0
        return self.start + self.offset + ran

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Job:
    full_name: str
    # name -> default; a job with parameters must be started with buildWithParameters.
    parameters: dict[str, str] = field(default_factory=dict)
    disabled: bool = False
    # (seconds after start, line) printed by each build, then "Finished: RESULT".
    script: list[tuple[float, str]] = field(default_factory=lambda: [(0.0, "Started")])
    result: str = "SUCCESS"
    duration: float = 2.0
    # While result is already set, building stays true this long (as Jenkins does at the end).
    finishing: float = 0.3
    test_report: dict[str, Any] | None = None
    quiet_period: float = 0.5
    executor_wait: float = 0.3
    # How long a left item shows "executable": null before the build number appears.
    executable_delay: float = 0.3
    next_number: int = 1


@dataclass
class Build:
    job: Job
    number: int
    queue_id: int
    params: dict[str, str]
    started: float
    stopped_at: float | None = None


@dataclass
class QueueItem:
    id: int
    job: Job
    params: dict[str, str]
    queued: float
    cancelled_at: float | None = None
    build: Build | None = None
    left: float | None = None


class StandInJenkins:
    """A threaded HTTP server on a free loopback port; ``url`` is its base URL."""

    def __init__(
        self, *, user: str = "ci-bot", token: str | None = None, crumbs: bool = True
    ) -> None:
        self.user = user
        self.token = token or secrets.token_hex(16)
        self.crumbs = crumbs
        self.crumb = secrets.token_hex(16)
        self.clock = Clock()
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.queue: dict[int, QueueItem] = {}
        self.builds: dict[tuple[str, int], Build] = {}
        self.next_queue_id = 100
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.slow_seconds = 0.0
        self.slow_pattern: re.Pattern[str] | None = None
        self.error_pattern: re.Pattern[str] | None = None
        self.error_status = 500
        self._server: ThreadingHTTPServer | None = None
        # Open client connections: a stopped Jenkins drops them too (keep-alive would not).
        self.connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> StandInJenkins:
        handler = type("Handler", (_Handler,), {"jenkins": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """The port refuses connections (a Jenkins that is down) until ``start()``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            connections, self.connections = set(self.connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    # --- set-up and faults --------------------------------------------------------------

    def add_job(self, full_name: str, **options: Any) -> Job:
        with self.lock:
            job = Job(full_name=full_name, **options)
            self.jobs[full_name] = job
            return job

    def slow(self, seconds: float, pattern: str = ".*") -> None:
        self.slow_seconds, self.slow_pattern = seconds, re.compile(pattern)

    def fail(self, pattern: str = ".*", status: int = 500) -> None:
        """Every request whose path matches answers ``status`` (500, or 503 as an overloaded
        Jenkins or its proxy does)."""
        self.error_pattern = re.compile(pattern)
        self.error_status = status

    def heal(self) -> None:
        self.slow_seconds, self.slow_pattern, self.error_pattern = 0.0, None, None

    def delete_build(self, full_name: str, number: int) -> None:
        with self.lock:
            self._advance()
            del self.builds[(full_name, number)]

    def requests_to(self, pattern: str) -> list[tuple[str, str, dict[str, str]]]:
        regex = re.compile(pattern)
        return [r for r in self.requests if regex.search(r[1])]

    # --- the simulation ------------------------------------------------------------------

    def _advance(self) -> None:
        """Moves queue items along by the clock: waiting -> buildable -> left (a build)."""
        now = self.clock.now()
        for item in self.queue.values():
            if item.left is not None:
                continue
            if item.cancelled_at is not None:
                item.left = item.cancelled_at
                continue
            start = item.queued + item.job.quiet_period + item.job.executor_wait
            if now >= start:
                job = item.job
                build = Build(job, job.next_number, item.id, item.params, started=start)
                job.next_number += 1
                self.builds[(job.full_name, build.number)] = build
                item.build, item.left = build, start

    def build_state(self, build: Build) -> tuple[bool, str | None, float]:
        """(building, result, elapsed seconds) of a build now."""
        now = self.clock.now()
        job = build.job
        if build.stopped_at is not None and now >= build.stopped_at:
            return now < build.stopped_at + 0.05, "ABORTED", build.stopped_at - build.started
        elapsed = now - build.started
        if elapsed >= job.duration:
            return False, job.result, job.duration
        if elapsed >= job.duration - job.finishing:
            return True, job.result, elapsed
        return True, None, elapsed

    def console_bytes(self, build: Build) -> bytes:
        building, result, elapsed = self.build_state(build)
        lines = [line for at, line in build.job.script if at <= elapsed]
        text = "".join(f"{line}\n" for line in lines)
        if build.stopped_at is not None and self.clock.now() >= build.stopped_at:
            text += "Aborted by user\n"
        if not building:
            text += f"Finished: {result}\n"
        return text.encode("utf-8")


def _queue_id_from(path: str) -> int | None:
    match = re.fullmatch(r"queue/item/(\d+)/(?:api/json)?", path)
    return int(match.group(1)) if match else None


class _Handler(BaseHTTPRequestHandler):
    jenkins: StandInJenkins
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test output is for the tests

    def setup(self) -> None:
        super().setup()
        with self.jenkins.lock:
            self.jenkins.connections.add(self.connection)

    def finish(self) -> None:
        with self.jenkins.lock:
            self.jenkins.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            super().handle()

    # --- plumbing -----------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes | str | dict[str, Any] | list[Any] = b"",
        *,
        content_type: str = "text/plain;charset=UTF-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, dict | list):
            body, content_type = json.dumps(body), "application/json;charset=utf-8"
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("X-Jenkins", VERSION)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _html(self, status: int, text: str) -> None:
        self._send(status, f"<html><body>{text}</body></html>", content_type="text/html")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        j = self.jenkins
        split = urlsplit(self.path)
        path = split.path.lstrip("/")
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        j.requests.append((method, self.path, dict(self.headers.items())))
        if j.slow_pattern is not None and j.slow_pattern.search(path):
            time.sleep(j.slow_seconds)
        if j.error_pattern is not None and j.error_pattern.search(path):
            self._html(j.error_status, "A problem occurred while processing the request.")
            return
        if not self._authenticated():
            self._send(
                401,
                "Unauthorized",
                headers={"WWW-Authenticate": 'Basic realm="Jenkins"'},
            )
            return
        if path == "crumbIssuer/api/json" and method == "GET":
            if not j.crumbs:
                self._html(404, "Not Found")
                return
            self._send(
                200,
                {
                    "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                    "crumb": j.crumb,
                    "crumbRequestField": "Jenkins-Crumb",
                },
            )
            return
        if method == "POST" and j.crumbs and self.headers.get("Jenkins-Crumb") != j.crumb:
            self._html(403, "No valid crumb was included in the request")
            return
        with j.lock:
            j._advance()
            self._route(method, path, query)

    def _authenticated(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(
            f"{user}:{token}", f"{self.jenkins.user}:{self.jenkins.token}"
        )

    # --- routes -------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        j = self.jenkins
        if path == "" and method == "GET":
            self._html(200, "Dashboard [Jenkins]")
        elif path == "me/api/json" and method == "GET":
            self._send(
                200,
                {"_class": "hudson.model.User", "id": j.user, "fullName": j.user},
            )
        elif path == "api/json" and method == "GET":
            self._send(200, {"_class": "hudson.model.Hudson", "mode": "NORMAL", "jobs": []})
        elif path == "queue/api/json" and method == "GET":
            self._send(200, {"items": [self._queue_json(i) for i in j.queue.values()
                                       if i.left is None]})  # fmt: skip
        elif path == "queue/cancelItem" and method == "POST":
            item = j.queue.get(int(query.get("id", "0") or 0))
            if item is None or item.left is not None:
                self._html(404, "Not Found")
                return
            item.cancelled_at = j.clock.now()
            item.left = item.cancelled_at
            self._send(204)
        elif (queue_id := _queue_id_from(path)) is not None and method == "GET":
            item = j.queue.get(queue_id)
            if item is None or (
                item.left is not None and j.clock.now() > item.left + LEFT_ITEM_TTL
            ):
                self._html(404, "Not Found")
            elif path.endswith("api/json"):
                self._send(200, self._queue_json(item))
            else:
                self._html(200, f"Queue item {queue_id}")
        elif path.startswith("job/"):
            self._job_route(method, path, query)
        else:
            self._html(404, "Not Found")

    def _job_route(self, method: str, path: str, query: dict[str, str]) -> None:
        j = self.jenkins
        parts = path.rstrip("/").split("/")
        names: list[str] = []
        while len(parts) >= 2 and parts[0] == "job":
            names.append(unquote(parts[1]))
            parts = parts[2:]
        job = j.jobs.get("/".join(names))
        if job is None:
            self._html(404, "Not Found")
            return
        rest = "/".join(parts)
        if rest == "api/json" and method == "GET":
            self._send(200, self._job_json(job))
        elif rest in ("build", "buildWithParameters") and method == "POST":
            self._trigger(job, rest, query)
        elif parts and parts[0].isdigit():
            build = j.builds.get((job.full_name, int(parts[0])))
            if build is None:
                self._html(404, "Not Found")
                return
            self._build_route(method, build, "/".join(parts[1:]), query)
        else:
            self._html(404, "Not Found")

    def _trigger(self, job: Job, endpoint: str, query: dict[str, str]) -> None:
        j = self.jenkins
        if job.disabled:
            self._html(409, f"{job.full_name} is disabled")
            return
        if endpoint == "build" and job.parameters:
            self._html(400, "Nothing is submitted")
            return
        if endpoint == "buildWithParameters" and not job.parameters:
            self._html(500, "java.lang.IllegalStateException: This build is not parameterized!")
            return
        # Parameters the job does not define are dropped (Jenkins' SECURITY-170 behaviour).
        params = {name: query.get(name, default) for name, default in job.parameters.items()}
        for item in j.queue.values():
            if item.job is job and item.left is None and item.params == params:
                # Jenkins merges an identical request into the waiting item.
                self._send(303, headers={"Location": f"{j.url}queue/item/{item.id}/"})
                return
        j.next_queue_id += 1
        item = QueueItem(j.next_queue_id, job, params, queued=j.clock.now())
        j.queue[item.id] = item
        self._send(201, headers={"Location": f"{j.url}queue/item/{item.id}/"})

    def _build_route(self, method: str, build: Build, rest: str, query: dict[str, str]) -> None:
        j = self.jenkins
        building, _, _ = j.build_state(build)
        if rest == "api/json" and method == "GET":
            self._send(200, self._build_json(build))
        elif rest == "consoleText" and method == "GET":
            self._send(200, j.console_bytes(build))
        elif rest == "logText/progressiveText" and method == "GET":
            data = j.console_bytes(build)
            start = int(query.get("start", "0") or 0)
            headers = {"X-Text-Size": str(len(data))}
            if building:
                headers["X-More-Data"] = "true"
            self._send(200, data[start:], headers=headers)
        elif rest == "testReport/api/json" and method == "GET":
            if building or build.job.test_report is None or build.stopped_at is not None:
                self._html(404, "Not Found")
            else:
                self._send(200, {"_class": "hudson.tasks.junit.TestResult",
                                 **build.job.test_report})  # fmt: skip
        elif rest == "stop" and method == "POST":
            if building and build.stopped_at is None:
                build.stopped_at = j.clock.now()
            # Jenkins redirects to the build page; requests follows with a GET.
            self._send(302, headers={"Location": self._build_url(build)})
        elif rest == "" and method == "GET":
            self._html(200, f"{build.job.full_name} #{build.number}")
        else:
            self._html(404, "Not Found")

    # --- JSON shapes --------------------------------------------------------------------

    def _job_url(self, job: Job) -> str:
        path = "".join(f"job/{quote(name, safe='')}/" for name in job.full_name.split("/"))
        return f"{self.jenkins.url}{path}"

    def _build_url(self, build: Build) -> str:
        return f"{self._job_url(build.job)}{build.number}/"

    def _parameters_action(self, params: dict[str, str]) -> dict[str, Any]:
        return {
            "_class": "hudson.model.ParametersAction",
            "parameters": [
                {"_class": "hudson.model.StringParameterValue", "name": k, "value": v}
                for k, v in params.items()
            ],
        }

    def _queue_json(self, item: QueueItem) -> dict[str, Any]:
        j = self.jenkins
        now = j.clock.now()
        job = item.job
        base: dict[str, Any] = {
            "actions": [self._parameters_action(item.params)] if item.params else [],
            "blocked": False,
            "buildable": False,
            "id": item.id,
            "inQueueSince": int(item.queued * 1000),
            "params": "".join(f"\n{k}={v}" for k, v in item.params.items()),
            "stuck": False,
            "task": {
                "_class": "hudson.model.FreeStyleProject",
                "name": job.full_name.split("/")[-1],
                "url": self._job_url(job),
            },
            "url": f"queue/item/{item.id}/",
        }
        if item.left is not None:
            executable = None
            if item.build is not None and now >= item.left + job.executable_delay:
                executable = {
                    "_class": "hudson.model.FreeStyleBuild",
                    "number": item.build.number,
                    "url": self._build_url(item.build),
                }
            return {
                "_class": CLASS_PREFIX + "LeftItem",
                **base,
                "why": None,
                "cancelled": item.cancelled_at is not None,
                "executable": executable,
            }
        quiet_end = item.queued + job.quiet_period
        if now < quiet_end:
            return {
                "_class": CLASS_PREFIX + "WaitingItem",
                **base,
                "why": f"In the quiet period. Expires in {quiet_end - now:.1f} sec",
                "timestamp": int(quiet_end * 1000),
            }
        return {
            "_class": CLASS_PREFIX + "BuildableItem",
            **base,
            "buildable": True,
            "why": "Waiting for next available executor",
            "pending": False,
        }

    def _job_json(self, job: Job) -> dict[str, Any]:
        j = self.jenkins
        builds = sorted(
            (b for (name, _), b in j.builds.items() if name == job.full_name),
            key=lambda b: -b.number,
        )
        entries = [
            {
                "_class": "hudson.model.FreeStyleBuild",
                "number": b.number,
                "url": self._build_url(b),
                "queueId": b.queue_id,
                "actions": [self._parameters_action(b.params)] if b.params else [{}],
            }
            for b in builds
        ]
        return {
            "_class": "hudson.model.FreeStyleProject",
            "name": job.full_name.split("/")[-1],
            "fullName": job.full_name,
            "url": self._job_url(job),
            "buildable": not job.disabled,
            "color": "disabled" if job.disabled else "blue",
            "builds": entries,
            "firstBuild": entries[-1] if entries else None,
            "lastBuild": entries[0] if entries else None,
            "nextBuildNumber": job.next_number,
            "inQueue": any(i.job is job and i.left is None for i in j.queue.values()),
            "property": [
                {
                    "_class": "hudson.model.ParametersDefinitionProperty",
                    "parameterDefinitions": [
                        {"name": k, "defaultParameterValue": {"value": v}}
                        for k, v in job.parameters.items()
                    ],
                }
            ]
            if job.parameters
            else [],
        }

    def _build_json(self, build: Build) -> dict[str, Any]:
        building, result, elapsed = self.jenkins.build_state(build)
        actions: list[dict[str, Any]] = [
            {"_class": "hudson.model.CauseAction",
             "causes": [{"shortDescription": f"Started by user {self.jenkins.user}"}]},
        ]  # fmt: skip
        if build.params:
            actions.insert(0, self._parameters_action(build.params))
        return {
            "_class": "hudson.model.FreeStyleBuild",
            "actions": actions,
            "building": building,
            "displayName": f"#{build.number}",
            "duration": 0 if building else int(elapsed * 1000),
            "estimatedDuration": int(build.job.duration * 1000),
            "fullDisplayName": f"{build.job.full_name} #{build.number}",
            "id": str(build.number),
            "number": build.number,
            "queueId": build.queue_id,
            "result": result,
            "timestamp": int(build.started * 1000),
            "url": self._build_url(build),
        }


def sample_test_report(*, failed: int = 1) -> dict[str, Any]:
    """A test report in the shape of ``testReport/api/json``."""
    cases = [
        {"className": "tests.test_boot", "name": "test_boot_banner", "duration": 0.41,
         "status": "PASSED", "errorDetails": None, "errorStackTrace": None, "stdout": None,
         "stderr": None, "skipped": False},
        {"className": "tests.test_boot", "name": "test_uart_echo", "duration": 1.2,
         "status": "FIXED", "errorDetails": None, "errorStackTrace": None, "stdout": "echo ok",
         "stderr": None, "skipped": False},
        {"className": "tests.test_flash", "name": "test_erase", "duration": 0.0,
         "status": "SKIPPED", "errorDetails": None, "errorStackTrace": None, "stdout": None,
         "stderr": None, "skipped": True},
    ]  # fmt: skip
    for n in range(failed):
        cases.append(
            {"className": "tests.test_flash", "name": f"test_verify_{n}", "duration": 2.5,
             "status": "FAILED", "errorDetails": "CRC mismatch at 0x0800_0400",
             "errorStackTrace": "AssertionError: CRC mismatch", "stdout": "flashing...",
             "stderr": "warn: slow erase", "skipped": False}
        )  # fmt: skip
    return {
        "duration": sum(c["duration"] for c in cases),
        "empty": False,
        "failCount": failed,
        "passCount": 2,
        "skipCount": 1,
        "suites": [{"name": "firmware", "duration": 4.1, "cases": cases}],
    }
