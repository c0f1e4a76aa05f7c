#!/usr/bin/env python3
# ruff: noqa: T201  # a command-line tool: printing is its output
"""Start test runs on the test management system from a pipeline, and wait for them.

Standard library only, Python >= 3.9: a pipeline fetches this one file
(``curl -fsS "$TMS_URL/api/v1/jenkins/client.py" -o tms_client.py``) and runs it with whatever
``python3`` the agent has. Installed with the project it is also the ``tms-client`` command.

    python3 tms_client.py run --url https://tms.lab --token "$TMS_TOKEN" \\
        --case board-smoke --machine lab-3 --param FW=1.2 --wait --junit results.xml

Exit codes:
    0  the run passed
    1  the run failed (tests failed)
    2  the run ended in error, was cancelled or timed out, or the service stayed unreachable
    3  usage error, or the service refused the request (its message is printed)
    4  ``status`` only: the run has not finished yet
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as a file from a checkout, this file's directory comes first on sys.path, and the
    # Django app next to it (its selectors.py) would shadow the standard library's modules.
    # The client imports nothing of its own, so that directory is simply taken off.
    _here = os.path.dirname(os.path.realpath(__file__))  # noqa: PTH120  # before any import
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _here]

import argparse
import http.client
import json
import random
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

__version__ = "1.0"

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_REFUSED = 3
EXIT_NOT_FINISHED = 4

# outcome -> exit code; an outcome not listed here (a newer server) counts as an error.
OUTCOME_EXIT_CODES = {
    "passed": EXIT_PASSED,
    "failed": EXIT_FAILED,
    "error": EXIT_ERROR,
    "cancelled": EXIT_ERROR,
    "timed_out": EXIT_ERROR,
}
# Answers worth asking again: the service (or a proxy in front of it) is restarting or busy.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Event types shown while waiting; heartbeats, raw serial traffic and the plan are not.
SHOWN_EVENTS = frozenset({"log", "test_start", "test_end", "error", "run_end", "board_status"})


def exit_code_for(outcome: str) -> int:
    return OUTCOME_EXIT_CODES.get(outcome, EXIT_ERROR)


def backoff_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 30.0,
    jitter: float = 0.2,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first): doubling from
    ``base`` up to ``cap``, minus up to ``jitter`` of it at random so that many pipelines
    cut off by one outage do not all come back in the same second."""
    delay = min(cap, base * (2 ** min(attempt, 30)))
    return delay * (1.0 - jitter * rand())


def api_base(url: str) -> str:
    """The API root for a service URL given with or without ``/api/v1``."""
    url = url.strip().rstrip("/")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--url must be an http(s) URL of the service, not {url!r}.")
    if url.endswith("/api/v1"):
        url = url[: -len("/api/v1")]
    return url + "/api/v1"


def parse_params(values: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param takes NAME=VALUE, not {value!r}.")
        params[name.strip()] = text
    return params


# --- errors -----------------------------------------------------------------------------------


class UsageError(Exception):
    pass


class ApiRefused(Exception):
    """The service answered and said no (4xx): asking again will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Unreachable(Exception):
    """The service could not be reached, or kept answering 5xx, for longer than allowed."""


class Ambiguous(Exception):
    """A request that creates something failed in a way that leaves unknown whether it
    arrived; repeating it could create it twice."""


class WaitTimeout(Exception):
    pass


class Stopped(BaseException):
    """SIGTERM or SIGINT: Jenkins aborted the build, or someone pressed Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --- HTTP -------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # The token goes only where it was meant to go: a redirect is reported, not followed.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _message_of(status: int, body: bytes) -> str:
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict):
        text = data.get("message") or data.get("detail")
        if text:
            return str(text)
    snippet = body.decode("utf-8", "replace").strip()[:300]
    return f"HTTP {status}" + (f": {snippet}" if snippet else "")


class Api:
    """A JSON client of the service's API that rides out restarts and proxy errors.

    Reads are retried on connection errors, timeouts, 429 and 502/503/504, backing off up to
    ``retry_for`` seconds in a row. A request that creates something is retried only when it
    certainly did not arrive (connection refused, 429, or 503 from the service itself, which
    changes nothing when it says so); otherwise it fails as ``Ambiguous`` rather than risk a
    second run.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retry_for: float = 600.0,
        out: Any = None,
    ) -> None:
        self.base = api_base(url)
        self.token = token
        self.timeout = timeout
        self.retry_for = retry_for
        self.out = out if out is not None else sys.stderr
        self._opener = urllib.request.build_opener(_NoRedirect)

    def _note(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _once(
        self, method: str, path: str, body: dict[str, Any] | None, accept: str
    ) -> tuple[int, bytes, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310  # the scheme is checked in api_base
            self.base + path, data=data, method=method
        )
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", accept)
        request.add_header("User-Agent", f"tms-client/{__version__}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers or {})

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        accept: str = "application/json",
        creates: bool = False,
    ) -> bytes:
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                status, payload, headers = self._once(method, path, body, accept)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                refused = isinstance(reason, ConnectionRefusedError)
                if creates and not refused:
                    raise Ambiguous(
                        f"{method} {path} failed ({reason}); it may or may not have reached "
                        "the service, so it is not sent again."
                    ) from None
                problem = f"cannot reach {self.base} ({reason})"
                retry_after = None
            else:
                if 200 <= status < 300:
                    return payload
                if status not in RETRY_STATUSES:
                    raise ApiRefused(status, _message_of(status, payload))
                if creates and status in (502, 504):
                    raise Ambiguous(
                        f"{method} {path} answered {status} by a proxy; the service may have "
                        "received it, so it is not sent again."
                    )
                problem = f"{self.base} answered {_message_of(status, payload)}"
                retry_after = _retry_after(headers)
            elapsed = time.monotonic() - started
            if elapsed >= self.retry_for:
                raise Unreachable(f"{problem}; gave up after {elapsed:.0f} s of retries.")
            delay = backoff_delay(attempt)
            if retry_after is not None:
                delay = max(delay, retry_after)
            delay = min(delay, max(0.1, self.retry_for - elapsed))
            self._note(f"tms: {problem}; retrying in {delay:.1f} s")
            time.sleep(delay)
            attempt += 1

    def json(self, method: str, path: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
        return json.loads(self.request(method, path, body, **kw).decode("utf-8"))


def _retry_after(headers: dict[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return min(float(value), 300.0)
            except ValueError:
                return None
    return None


# --- printing ---------------------------------------------------------------------------------


def event_line(event: dict[str, Any]) -> str | None:
    """One line (or a few) for an event worth showing, None for the others."""
    kind = event.get("type")
    data = event.get("data") or {}
    if kind not in SHOWN_EVENTS:
        return None
    stamp = str(event.get("ts") or "")[11:23]
    if kind == "log":
        if data.get("dropped"):
            return None
        where = data.get("test") or data.get("source") or ""
        return f"{stamp} {data.get('level', 'INFO')!s:7} [{where}] {data.get('message', '')}"
    if kind == "test_start":
        return f"{stamp} ----- {data.get('test')} started"
    if kind == "test_end":
        line = f"{stamp} ----- {data.get('test')} {str(data.get('outcome', '')).upper()}"
        if data.get("duration_s") is not None:
            line += f" in {float(data['duration_s']):.3f}s"
        if data.get("message"):
            line += "\n" + str(data["message"])
        return line
    if kind == "error":
        return f"{stamp} ERROR   [{data.get('kind', '')}] {data.get('message', '')}"
    if kind == "board_status":
        return f"{stamp} BOARD   {data.get('state', '')} {data.get('message') or ''}".rstrip()
    return f"{stamp} ----- run ended: {data.get('reason') or data.get('message') or ''}".rstrip()


def progress_text(run: dict[str, Any]) -> str:
    done = sum(int(run.get(k) or 0) for k in ("passed", "failed", "errors", "skipped"))
    planned = int(run.get("planned") or 0)
    return (
        f"tests {done}/{planned or '?'} (passed {run.get('passed', 0)}, failed "
        f"{run.get('failed', 0)}, errors {run.get('errors', 0)}, skipped {run.get('skipped', 0)})"
    )


def status_text(run: dict[str, Any]) -> str:
    state = run.get("status", "?")
    if run.get("outcome"):
        state += f" ({run['outcome']})"
    where = run.get("machine") or run.get("requested_machine") or run.get("requested_label") or ""
    text = f"run {run.get('id')} of {run.get('case')}: {state}"
    if where:
        text += f" on {where}"
    if run.get("status_message"):
        text += f": {run['status_message']}"
    return text


# --- commands ---------------------------------------------------------------------------------


class Stopper:
    """Turns SIGTERM and SIGINT into ``Stopped`` while a run is being waited for."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}

    def _raise(self, signum: int, frame: Any) -> NoReturn:
        raise Stopped(signum)

    def __enter__(self) -> Stopper:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self._raise)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _write(path: str, content: bytes) -> None:
    # Whole or not at all: a reader (the junit step) never sees half a file.
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    part.write_bytes(content)
    part.replace(target)


def _cancel(api: Api, run_id: int, why: str) -> None:
    """Asks the service to cancel the run; a Jenkins abort gives little time, so briefly."""
    api.retry_for = min(api.retry_for, 20.0)
    api.timeout = min(api.timeout, 10.0)
    try:
        api.request("POST", f"/runs/{run_id}/cancel/", {})
        print(f"tms: {why}: run {run_id} cancelled.", flush=True)
    except ApiRefused as exc:
        print(f"tms: {why}: run {run_id} not cancelled: {exc.message}", flush=True)
    except (Unreachable, Ambiguous) as exc:
        print(f"tms: {why}: could not cancel run {run_id}: {exc}", file=sys.stderr, flush=True)


def wait_for_run(
    api: Api, run_id: int, *, poll: float, deadline: float | None, show_log: bool = True
) -> dict[str, Any]:
    """Follows the run until it finishes, printing status changes, progress and new log
    lines; returns the finished run. ``deadline`` is a time.monotonic() value."""
    last_seq = 0
    last_status = ""
    last_progress = ""
    while True:
        run = api.json("GET", f"/runs/{run_id}/")
        if show_log:
            while True:
                page = api.json("GET", f"/runs/{run_id}/events/?after={last_seq}&limit=1000")
                events = page.get("events") or []
                for event in events:
                    line = event_line(event)
                    if line is not None:
                        print(line, flush=True)
                    last_seq = max(last_seq, int(event.get("seq") or 0))
                if len(events) < 1000:
                    break
        state = f"{run.get('status')}/{run.get('outcome')}"
        if state != last_status:
            print(f"tms: {status_text(run)}", flush=True)
            last_status = state
        progress = progress_text(run)
        if progress != last_progress and (run.get("planned") or run.get("status") == "done"):
            print(f"tms: {progress}", flush=True)
            last_progress = progress
        if run.get("status") == "done":
            return run
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeout(run_id)
        time.sleep(poll)


def cmd_run(args: argparse.Namespace, api: Api) -> int:
    if args.junit and not args.wait:
        raise UsageError("--junit needs --wait (the XML exists once the run has finished).")
    if args.log and not args.wait:
        raise UsageError("--log needs --wait.")
    body: dict[str, Any] = {
        "case": args.case,
        "parameters": parse_params(args.param or []),
        "source": "jenkins" if os.environ.get("JENKINS_URL") else "api",
    }
    if args.machine:
        body["machine"] = args.machine
    else:
        body["label"] = args.label
    if args.board is not None:
        body["board"] = args.board
    if args.timeout is not None:
        body["timeout"] = args.timeout
    if args.priority is not None:
        body["priority"] = args.priority

    run_id: int | None = None
    with Stopper():
        try:
            run = api.json("POST", "/runs/", body, creates=True)
            run_id = int(run["id"])
            print(f"tms: started {status_text(run)}", flush=True)
            print(f"tms: {api.base}/runs/{run_id}/", flush=True)
            if args.callback:
                try:
                    api.json(
                        "POST", f"/runs/{run_id}/callbacks/", {"url": args.callback}, creates=True
                    )
                except ApiRefused:
                    # A pipeline that asked for a callback would wait for it forever.
                    _cancel(api, run_id, "the callback was refused")
                    raise
                print(f"tms: {args.callback} will be told when the run finishes.", flush=True)
            if not args.wait:
                return EXIT_PASSED
            deadline = None
            if args.wait_timeout:
                deadline = time.monotonic() + args.wait_timeout
            try:
                run = wait_for_run(api, run_id, poll=args.poll_interval, deadline=deadline)
            except WaitTimeout:
                _cancel(api, run_id, f"not finished after --wait-timeout {args.wait_timeout} s")
                return EXIT_ERROR
        except Stopped as stop:
            name = signal.Signals(stop.signum).name
            if run_id is None:
                print(f"tms: {name} before the run was created.", file=sys.stderr, flush=True)
            else:
                _cancel(api, run_id, f"stopped by {name}")
            return EXIT_ERROR
    if args.junit:
        _write(args.junit, api.request("GET", f"/runs/{run_id}/junit.xml", accept="*/*"))
        print(f"tms: JUnit XML written to {args.junit}", flush=True)
    if args.log:
        _write(args.log, api.request("GET", f"/runs/{run_id}/log", accept="*/*"))
        print(f"tms: log written to {args.log}", flush=True)
    outcome = str(run.get("outcome") or "")
    code = exit_code_for(outcome)
    print(f"tms: run {run_id} {outcome or 'ended'}; exit code {code}", flush=True)
    return code


def cmd_status(args: argparse.Namespace, api: Api) -> int:
    run = api.json("GET", f"/runs/{args.run_id}/")
    print(status_text(run))
    print(progress_text(run))
    if run.get("status") != "done":
        return EXIT_NOT_FINISHED
    return exit_code_for(str(run.get("outcome") or ""))


def cmd_cancel(args: argparse.Namespace, api: Api) -> int:
    run = api.json("POST", f"/runs/{args.run_id}/cancel/", {})
    print(status_text(run))
    return EXIT_PASSED


# --- command line -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 on bad usage; 2 means "the run ended in error" here.
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get("TMS_URL"), help="service URL (default: $TMS_URL)"
    )
    common.add_argument(
        "--token",
        default=os.environ.get("TMS_TOKEN"),
        help="API token from /api/v1/tokens/ (default: $TMS_TOKEN; prefer the variable)",
    )
    common.add_argument(
        "--request-timeout", type=_positive, default=30.0, help="seconds per HTTP request"
    )
    common.add_argument(
        "--retry-for",
        type=_positive,
        default=600.0,
        help="keep retrying an unreachable service this many seconds in a row (default 600)",
    )

    parser = _Parser(
        prog="tms-client",
        description="Start test runs on the test management system and wait for them.",
        epilog="Exit codes: 0 passed, 1 failed, 2 error/cancelled/timed out/unreachable, "
        "3 usage or refused by the service, 4 (status) not finished.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", parents=[common], help="start a run (and wait for it)")
    run.add_argument("--case", required=True, help="test case name")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--machine", help="machine name")
    where.add_argument("--label", help="any free machine with this label")
    run.add_argument("--board", type=int, help="board id (with --machine)")
    run.add_argument(
        "--param", action="append", metavar="NAME=VALUE", help="run parameter (repeatable)"
    )
    run.add_argument("--timeout", type=int, help="run timeout in seconds (server side)")
    run.add_argument("--priority", type=int, help="-100..100 (above 0: admins only)")
    run.add_argument("--wait", action="store_true", help="wait for the run to finish")
    run.add_argument("--junit", metavar="PATH", help="with --wait: write the JUnit XML here")
    run.add_argument("--log", metavar="PATH", help="with --wait: write the run's log here")
    run.add_argument("--callback", metavar="URL", help="POSTed to when the run finishes")
    run.add_argument(
        "--wait-timeout", type=_positive, help="cancel the run if not finished after this long"
    )
    run.add_argument(
        "--poll-interval", type=_positive, default=2.0, help="seconds between polls (default 2)"
    )
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser("status", parents=[common], help="show a run")
    status.add_argument("run_id", type=int)
    status.set_defaults(handler=cmd_status)

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a run")
    cancel.add_argument("run_id", type=int)
    cancel.set_defaults(handler=cmd_cancel)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("give --url or set TMS_URL")
    if not args.token:
        parser.error("give --token or set TMS_TOKEN")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        api = Api(args.url, args.token, timeout=args.request_timeout, retry_for=args.retry_for)
        return int(args.handler(args, api))
    except UsageError as exc:
        print(f"tms: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    except ApiRefused as exc:
        print(f"tms: refused (HTTP {exc.status}): {exc.message}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    except (Unreachable, Ambiguous) as exc:
        print(f"tms: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except Stopped as stop:
        print(f"tms: stopped by {signal.Signals(stop.signum).name}.", file=sys.stderr, flush=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
