"""The pipeline client's own parts: arguments, exit codes, backoff, retries against a scripted
HTTP server, and that it stays a stdlib-only file for Python >= 3.9."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from jenkins import tms_client
from tests.conftest import REPO_ROOT, free_port

CLIENT = Path(tms_client.__file__)


# --- Python 3.9, standard library only ----------------------------------------------------


def test_parses_as_python_3_9():
    ast.parse(CLIENT.read_text(), filename=str(CLIENT), feature_version=(3, 9))


def test_imports_only_the_standard_library():
    tree = ast.parse(CLIENT.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            modules.add((node.module or "").split(".")[0])
    assert modules, "found no imports at all"
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules
    assert "django" not in modules and "jenkins" not in modules


def test_runs_as_a_plain_file_outside_the_checkout(tmp_path):
    # What a pipeline does: copy the one file somewhere and run it.
    copy = tmp_path / "tms_client.py"
    copy.write_bytes(CLIENT.read_bytes())
    result = subprocess.run(
        [sys.executable, "-I", str(copy), "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and tms_client.__version__ in result.stdout


def test_runs_as_a_file_inside_the_checkout_despite_the_app_beside_it():
    # jenkins/selectors.py sits next to it and would shadow the stdlib's selectors module.
    result = subprocess.run(
        [sys.executable, str(CLIENT), "--help"], capture_output=True, text=True, timeout=30,
        cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Exit codes: 0 passed, 1 failed" in result.stdout


def test_console_script_entry_point_is_declared():
    import tomllib

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["tms-client"] == "jenkins.tms_client:main"


# --- arguments --------------------------------------------------------------------------------


def test_run_arguments(monkeypatch):
    monkeypatch.delenv("TMS_URL", raising=False)
    monkeypatch.delenv("TMS_TOKEN", raising=False)
    args = tms_client.parse_args([
        "run", "--url", "https://tms.lab", "--token", "tms_x", "--case", "smoke",
        "--label", "linux", "--param", "FW=1.2", "--param", "MODE=a=b", "--wait",
        "--junit", "out.xml", "--timeout", "600", "--priority", "-5",
    ])  # fmt: skip
    assert (args.command, args.case, args.label, args.machine) == ("run", "smoke", "linux", None)
    assert tms_client.parse_params(args.param) == {"FW": "1.2", "MODE": "a=b"}
    assert (args.wait, args.junit, args.timeout, args.priority) == (True, "out.xml", 600, -5)
    assert args.handler is tms_client.cmd_run


def test_url_and_token_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("TMS_URL", "https://tms.lab/")
    monkeypatch.setenv("TMS_TOKEN", "tms_env")
    args = tms_client.parse_args(["status", "12"])
    assert (args.url, args.token, args.run_id) == ("https://tms.lab/", "tms_env", 12)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--case", "x", "--machine", "m"],  # no url/token
        ["run", "--url", "http://t", "--token", "t", "--case", "x"],  # neither machine nor label
        ["run", "--url", "http://t", "--token", "t", "--case", "x", "--machine", "m",
         "--label", "l"],  # both
        ["run", "--url", "http://t", "--token", "t", "--machine", "m"],  # no case
        ["status", "--url", "http://t", "--token", "t", "twelve"],
        ["frobnicate"],
    ],
)  # fmt: skip
def test_usage_errors_exit_3_not_argparse_2(monkeypatch, capsys, argv):
    monkeypatch.delenv("TMS_URL", raising=False)
    monkeypatch.delenv("TMS_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        tms_client.parse_args(argv)
    assert exit_info.value.code == tms_client.EXIT_REFUSED == 3
    assert "error:" in capsys.readouterr().err


def test_bad_param_and_url_are_usage_errors(capsys):
    base = ["--token", "t", "--case", "x", "--machine", "m"]
    assert tms_client.main(["run", "--url", "http://t", "--param", "novalue", *base]) == 3
    assert "--param takes NAME=VALUE" in capsys.readouterr().err
    assert tms_client.main(["run", "--url", "ftp://t", *base]) == 3
    assert "--url must be an http(s) URL" in capsys.readouterr().err
    assert tms_client.main(["run", "--url", "http://t", "--junit", "x.xml", *base]) == 3
    assert "--junit needs --wait" in capsys.readouterr().err


def test_api_base_accepts_the_service_or_the_api_root():
    assert tms_client.api_base("https://tms.lab") == "https://tms.lab/api/v1"
    assert tms_client.api_base("https://tms.lab/") == "https://tms.lab/api/v1"
    assert tms_client.api_base("https://tms.lab/api/v1/") == "https://tms.lab/api/v1"
    assert tms_client.api_base("http://h:8000/tms") == "http://h:8000/tms/api/v1"


# --- exit codes and backoff -------------------------------------------------------------------


def test_exit_codes_by_outcome():
    outcomes = ("passed", "failed", "error", "cancelled", "timed_out", "something-new", "")
    codes = [tms_client.exit_code_for(o) for o in outcomes]
    assert codes == [0, 1, 2, 2, 2, 2, 2]


def test_backoff_doubles_to_a_cap_and_jitter_only_shortens():
    no_jitter = [tms_client.backoff_delay(a, jitter=0) for a in range(8)]
    assert no_jitter == [1, 2, 4, 8, 16, 30, 30, 30]
    assert tms_client.backoff_delay(3, jitter=0.2, rand=lambda: 1.0) == pytest.approx(6.4)
    assert tms_client.backoff_delay(3, jitter=0.2, rand=lambda: 0.0) == 8
    assert tms_client.backoff_delay(10_000, jitter=0) == 30  # no overflow


def test_event_lines_show_logs_and_tests_and_skip_noise():
    line = tms_client.event_line
    ts = "2026-01-01T10:00:01.250Z"
    assert line({"type": "heartbeat", "ts": ts, "data": {}}) is None
    assert line({"type": "serial", "ts": ts, "data": {"data": "x"}}) is None
    log = {"level": "INFO", "source": "test", "message": "flashing"}
    assert line({"type": "log", "ts": ts, "data": log}) == "10:00:01.250 INFO    [test] flashing"
    end = {"test": "t.py::test_a", "outcome": "failed", "duration_s": 0.5, "message": "boom"}
    expected = "10:00:01.250 ----- t.py::test_a FAILED in 0.500s\nboom"
    assert line({"type": "test_end", "ts": ts, "data": end}) == expected


# --- HTTP: retries against a scripted server --------------------------------------------------


class Scripted:
    """A loopback HTTP server answering each request with the next scripted (status, body)."""

    def __init__(self, answers: list[tuple[int, dict]]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                status, payload = outer.answers.pop(0) if outer.answers else (500, {})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[type[Scripted]]:
    made: list[Scripted] = []

    def make(answers):
        server = Scripted(answers)
        made.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in made:
        server.close()


def fast_api(url: str, **kw) -> tms_client.Api:
    api = tms_client.Api(url, "tms_secret", out=sys.stderr, **kw)
    return api


def test_reads_retry_on_502_503_504_and_429_then_succeed(scripted, monkeypatch):
    monkeypatch.setattr(tms_client, "backoff_delay", lambda attempt: 0.01)
    server = scripted([(502, {}), (503, {"message": "db down"}), (504, {}), (429, {}),
                       (200, {"id": 7, "status": "done"})])  # fmt: skip
    assert fast_api(server.url).json("GET", "/runs/7/") == {"id": 7, "status": "done"}
    assert len(server.requests) == 5
    (_, path, headers, _) = server.requests[-1]
    assert path == "/api/v1/runs/7/" and headers["Authorization"] == "Bearer tms_secret"


def test_4xx_is_never_retried_and_carries_the_message(scripted):
    server = scripted([(400, {"message": "Invalid input: case: Object with name=x does not "
                              "exist.", "extra": {}})])  # fmt: skip
    with pytest.raises(tms_client.ApiRefused) as refused:
        fast_api(server.url).json("POST", "/runs/", {"case": "x"}, creates=True)
    assert refused.value.status == 400
    assert refused.value.message.startswith("Invalid input: case:")
    assert len(server.requests) == 1


def test_creating_is_not_repeated_after_an_ambiguous_proxy_error(scripted):
    server = scripted([(502, {}), (201, {"id": 1})])
    with pytest.raises(tms_client.Ambiguous):
        fast_api(server.url).json("POST", "/runs/", {"case": "x"}, creates=True)
    assert len(server.requests) == 1


def test_creating_is_repeated_when_the_service_says_it_changed_nothing(scripted, monkeypatch):
    monkeypatch.setattr(tms_client, "backoff_delay", lambda attempt: 0.01)
    server = scripted([(503, {"message": "nothing was changed"}), (201, {"id": 1})])
    assert fast_api(server.url).json("POST", "/runs/", {"case": "x"}, creates=True) == {"id": 1}
    assert len(server.requests) == 2


def test_gives_up_after_retry_for_seconds_of_refused_connections(capsys):
    port = free_port()  # nothing listens there
    api = fast_api(f"http://127.0.0.1:{port}", retry_for=0.5)
    with pytest.raises(tms_client.Unreachable, match="Connection refused"):
        api.json("GET", "/runs/1/")
    assert "retrying in" in capsys.readouterr().err


def test_status_and_cancel_commands(scripted, capsys):
    run = {"id": 3, "case": "smoke", "status": "done", "outcome": "failed", "machine": "m1",
           "planned": 2, "passed": 1, "failed": 1, "errors": 0, "skipped": 0}  # fmt: skip
    server = scripted([(200, run), (200, {**run, "status": "running", "outcome": ""}),
                       (200, {**run, "status": "running", "cancel_requested": True}),
                       (409, {"message": "Run 3 has already finished."})])  # fmt: skip
    common = ["--url", server.url, "--token", "t"]
    assert tms_client.main(["status", "3", *common]) == 1
    assert "run 3 of smoke: done (failed) on m1" in capsys.readouterr().out
    assert tms_client.main(["status", "3", *common]) == tms_client.EXIT_NOT_FINISHED
    assert tms_client.main(["cancel", "3", *common]) == 0
    assert server.requests[2][:2] == ("POST", "/api/v1/runs/3/cancel/")
    assert tms_client.main(["cancel", "3", *common]) == 3
    assert "Run 3 has already finished." in capsys.readouterr().err


# --- the example pipeline -------------------------------------------------------------------


def test_the_example_jenkinsfile_uses_the_client_as_documented():
    import re

    from django.urls import resolve

    text = (REPO_ROOT / "jenkins" / "Jenkinsfile").read_text()
    fetched = re.search(r'"\$TMS_URL(/api/v1/jenkins/client\.py)"', text)
    assert fetched is not None
    assert resolve(fetched.group(1)).url_name == "jenkins-tms-client"
    assert "withCredentials([string(credentialsId: 'tms-token', variable: 'TMS_TOKEN')])" in text
    assert "python3 tms_client.py run" in text and "--wait --junit results/tms-junit.xml" in text
    post = text[text.index("post {") :]
    assert "always {" in post and "junit testResults: 'results/tms-junit.xml'" in post
    # Every option the pipeline passes is one the client knows.
    options = set(re.findall(r"(--[a-z][a-z-]+)", text[text.index("tms_client.py run") :]))
    run_help = subprocess.run(
        [sys.executable, str(CLIENT), "run", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    assert options and all(option in run_help for option in options), options
