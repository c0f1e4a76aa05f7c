"""The one way this project talks to a Jenkins server: a thin wrapper over python-jenkins.

Two things make it more than a pass-through:

* **The import.** This Django app is a top-level package named ``jenkins``, the same name as
  python-jenkins' own module, so ``import jenkins`` here always gives the app. The library is
  therefore loaded once, below, from its installed files under the name ``python_jenkins``
  (see ``load_python_jenkins``). Nothing else in the project imports it.
* **The errors.** python-jenkins raises its own ``JenkinsException`` family for some statuses,
  but **raw** ``requests`` exceptions for others (400/409/422, refused connections, TLS errors),
  and often re-raises a 404 as a plain ``JenkinsException``. Every call goes through
  ``_translated``, which reads the whole exception chain and raises one of our
  ``JenkinsError`` subclasses with a message a lab engineer can act on and a ``retryable``
  flag the tasks use to decide whether to try again.

Every call has a timeout (python-jenkins has none by default): connect and read, per server.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from test_management_system.errors import ApplicationError

if TYPE_CHECKING:
    from jenkins.models import JenkinsServer

LIBRARY_MODULE = "python_jenkins"


def _library_dir() -> Path:
    """The installed ``jenkins/`` package directory of the python-jenkins distribution."""
    try:
        dist = metadata.distribution("python-jenkins")
    except metadata.PackageNotFoundError as exc:  # pragma: no cover - the dependency is pinned
        raise ImportError("python-jenkins is not installed (see requirements.txt).") from exc
    for file in dist.files or ():
        if file.as_posix() == "jenkins/__init__.py":
            return Path(str(dist.locate_file(file))).parent
    raise ImportError("python-jenkins is installed but its jenkins/__init__.py is missing.")


def load_python_jenkins() -> ModuleType:
    """python-jenkins, loaded from its installed files as the module ``python_jenkins``.

    Its ``__init__`` does ``from jenkins import plugins``; with our app owning the name
    ``jenkins``, that would fail. Its ``plugins`` submodule is loaded first, as
    ``python_jenkins.plugins``, and shown to that one import statement as ``jenkins.plugins``
    only while the library's code runs; afterwards ``sys.modules`` is as it was, plus
    ``python_jenkins`` and ``python_jenkins.plugins``.
    """
    if LIBRARY_MODULE in sys.modules:
        return sys.modules[LIBRARY_MODULE]
    directory = _library_dir()
    init_spec = importlib.util.spec_from_file_location(
        LIBRARY_MODULE, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    plugins_spec = importlib.util.spec_from_file_location(
        f"{LIBRARY_MODULE}.plugins", directory / "plugins.py"
    )
    if init_spec is None or init_spec.loader is None or plugins_spec is None:
        raise ImportError(f"cannot load python-jenkins from {directory}")
    assert plugins_spec.loader is not None
    plugins = importlib.util.module_from_spec(plugins_spec)
    plugins_spec.loader.exec_module(plugins)
    module = importlib.util.module_from_spec(init_spec)
    module.plugins = plugins  # type: ignore[attr-defined]  # what the package import would set
    sys.modules[LIBRARY_MODULE] = module
    sys.modules[f"{LIBRARY_MODULE}.plugins"] = plugins
    shadowed = sys.modules.get("jenkins.plugins")
    sys.modules["jenkins.plugins"] = plugins
    try:
        init_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[LIBRARY_MODULE]
        raise
    finally:
        if shadowed is None:
            del sys.modules["jenkins.plugins"]
        else:  # pragma: no cover - our app has no plugins module
            sys.modules["jenkins.plugins"] = shadowed
    return module


pj: Any = load_python_jenkins()


# --- Errors -----------------------------------------------------------------------------------


class JenkinsError(ApplicationError):
    """Jenkins did not do what we asked. ``retryable``: trying again later may succeed."""

    status_code = 502
    retryable = False


class JenkinsUnavailable(JenkinsError):
    """Not reachable, overloaded or failing (refused, reset, 5xx): try again later."""

    status_code = 503
    retryable = True


class JenkinsTimeout(JenkinsUnavailable):
    """No answer within the server's timeouts. Whether a POST took effect is unknown."""

    status_code = 504


class JenkinsAuthFailed(JenkinsError):
    """401/403: wrong user or API token, or the user lacks a permission in Jenkins."""


class JenkinsTlsError(JenkinsError):
    """The certificate could not be verified."""


class JenkinsNotFound(JenkinsError):
    """404 for a job, build or queue item."""


class JenkinsJobNotFound(JenkinsNotFound):
    pass


class JenkinsRejected(JenkinsError):
    """Jenkins understood and refused (400 bad/missing parameters, 409 disabled job, 422)."""


class JenkinsProtocolError(JenkinsError):
    """An answer that is not what the Jenkins API gives (no Location, not JSON, a redirect)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def translate(exc: BaseException, *, server: str, what: str, job: str = "") -> JenkinsError:
    """Our error for anything python-jenkins or requests raised while doing ``what``."""
    chain = list(_chain(exc))
    status = next(
        (
            e.response.status_code
            for e in chain
            if isinstance(e, requests.HTTPError) and e.response is not None
        ),
        None,
    )
    where = f"Jenkins at {server}"
    extra: dict[str, Any] = {"jenkins_status": status} if status else {}

    if any(isinstance(e, requests.exceptions.SSLError) for e in chain):
        return JenkinsTlsError(
            f"The TLS certificate of {where} could not be verified while trying to {what}. "
            "Install the CA, fix the certificate, or turn TLS verification off for this server.",
            extra=extra,
        )
    if any(isinstance(e, requests.Timeout | pj.TimeoutException) for e in chain):
        return JenkinsTimeout(
            f"{where} did not answer in time while trying to {what}.", extra=extra
        )
    if any(isinstance(e, requests.ConnectionError) for e in chain):
        return JenkinsUnavailable(
            f"Cannot connect to {where} to {what}: the server is down or unreachable.",
            extra=extra,
        )
    if status in (401, 403):
        return JenkinsAuthFailed(
            f"{where} refused our credentials (HTTP {status}) while trying to {what}: check "
            "the user name and API token configured for this server, and the user's "
            "permissions in Jenkins.",
            extra=extra,
        )
    if status == 400:
        return JenkinsRejected(
            f"{where} refused to {what} (HTTP 400): the job's parameters do not match what "
            "was sent (a parameterized job needs its parameters).",
            extra=extra,
        )
    if status == 409:
        return JenkinsRejected(
            f"{where} refused to {what} (HTTP 409): the job is disabled or cannot be built now.",
            extra=extra,
        )
    if status == 422:
        return JenkinsRejected(
            f"{where} refused to {what} (HTTP 422): the request was not acceptable.", extra=extra
        )
    if status == 404 or any(isinstance(e, pj.NotFoundException) for e in chain):
        if job:
            return JenkinsJobNotFound(
                f"{where} has no job {job!r} (or our user may not see it).", extra=extra
            )
        return JenkinsNotFound(f"{where} has no such item while trying to {what}.", extra=extra)
    if status is not None and status >= 500:
        return JenkinsUnavailable(
            f"{where} failed with HTTP {status} while trying to {what}.", extra=extra
        )
    if any(isinstance(e, pj.EmptyResponseException) for e in chain):
        return JenkinsProtocolError(
            f"{where} answered without the expected content while trying to {what} (for a "
            "build request: no Location header, as when a proxy redirects or identical "
            "parameters are already queued). Check the server URL (http vs https, trailing "
            "path).",
            extra=extra,
        )
    if any(isinstance(e, ValueError) for e in chain):
        return JenkinsProtocolError(
            f"{where} answered with something that is not JSON while trying to {what}.",
            extra=extra,
        )
    if status is not None:
        return JenkinsError(f"{where} answered HTTP {status} while trying to {what}.", extra=extra)
    return JenkinsError(f"{where} failed while trying to {what}: {exc}", extra=extra)


# --- The client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleChunk:
    text: str
    next_offset: int
    more: bool


def job_path(full_name: str) -> str:
    """``a/b`` -> ``job/a/job/b/``, each part URL-quoted, as Jenkins and python-jenkins spell it."""
    return "".join(f"job/{quote(part, safe='')}/" for part in full_name.split("/"))


class JenkinsClient:
    """One Jenkins server. Cheap to make; holds a requests session and the crumb it fetched."""

    def __init__(
        self,
        *,
        url: str,
        username: str = "",
        token: str = "",
        verify_tls: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        self.url = url if url.endswith("/") else url + "/"
        # requests takes (connect, read); python-jenkins passes its timeout through unchanged.
        self._jenkins = pj.Jenkins(
            self.url,
            username=username or None,
            password=token or None,
            timeout=(connect_timeout, read_timeout),
        )
        # python-jenkins has no option for this; its session is where requests reads it.
        self._jenkins._session.verify = verify_tls

    @classmethod
    def for_server(cls, server: JenkinsServer) -> JenkinsClient:
        return cls(
            url=server.url,
            username=server.username,
            token=server.api_token or "",
            verify_tls=server.verify_tls,
            connect_timeout=server.connect_timeout,
            read_timeout=server.read_timeout,
        )

    @contextmanager
    def _translated(self, what: str, job: str = "") -> Iterator[None]:
        try:
            yield
        except JenkinsError:
            raise
        except (pj.JenkinsException, requests.RequestException, ValueError, KeyError) as exc:
            raise translate(exc, server=self.url, what=what, job=job) from exc

    def _get(self, path: str, what: str, job: str = "") -> requests.Response:
        request = requests.Request("GET", self.url + path)
        with self._translated(what, job):
            response: requests.Response = self._jenkins.jenkins_request(request)
        return response

    def _get_json(self, path: str, what: str, job: str = "") -> dict[str, Any]:
        response = self._get(path, what, job)
        with self._translated(what, job):
            data = response.json()
        if not isinstance(data, dict):
            raise JenkinsProtocolError(f"Jenkins at {self.url} answered {what} with non-object.")
        return data

    # --- server -------------------------------------------------------------------------

    def version(self) -> str:
        """The ``X-Jenkins`` version; proves the URL is a Jenkins and the credentials work."""
        with self._translated("read its version"):
            # get_version() alone sends no credentials; whoami checks them and makes the
            # session send them from then on.
            self._jenkins.get_whoami()
            version: str = self._jenkins.get_version()
        return version

    def job_info(self, full_name: str) -> dict[str, Any]:
        return self._get_json(
            job_path(full_name) + "api/json?tree=name,fullName,url,buildable,"
            "property[parameterDefinitions[name,defaultParameterValue[value]]]",
            f"read job {full_name!r}",
            job=full_name,
        )

    # --- builds -------------------------------------------------------------------------

    def build_job(self, full_name: str, parameters: dict[str, str]) -> int:
        """Queues a build; returns the queue item id from the ``Location`` header."""
        with self._translated(f"start job {full_name!r}", job=full_name):
            queue_id: int = self._jenkins.build_job(full_name, parameters or None)
        return queue_id

    def queue_item(self, queue_id: int) -> dict[str, Any] | None:
        """The queue item, or None once Jenkins forgot it (about 5 minutes after it left)."""
        try:
            with self._translated(f"read queue item {queue_id}"):
                item: dict[str, Any] = self._jenkins.get_queue_item(queue_id)
        except JenkinsNotFound:
            return None
        return item

    def queue_items(self) -> list[dict[str, Any]]:
        with self._translated("read the build queue"):
            items: list[dict[str, Any]] = self._jenkins.get_queue_info()
        return items

    def builds(self, full_name: str) -> list[dict[str, Any]]:
        """The job's recent builds, newest first, with their queue id and parameters."""
        data = self._get_json(
            job_path(full_name)
            + "api/json?tree=builds[number,url,queueId,actions[parameters[name,value]]]",
            f"list the builds of {full_name!r}",
            job=full_name,
        )
        return list(data.get("builds") or [])

    def build_info(self, full_name: str, number: int) -> dict[str, Any] | None:
        """The build, or None when it no longer exists (deleted, or discarded by rotation)."""
        try:
            with self._translated(f"read build #{number} of {full_name!r}"):
                info: dict[str, Any] = self._jenkins.get_build_info(full_name, number)
        except JenkinsNotFound:
            return None
        return info

    def console(self, full_name: str, number: int, start: int) -> ConsoleChunk:
        """Console text from byte ``start`` (``logText/progressiveText``)."""
        response = self._get(
            f"{job_path(full_name)}{number}/logText/progressiveText?start={start}",
            f"read the console of build #{number} of {full_name!r}",
        )
        size = response.headers.get("X-Text-Size")
        next_offset = int(size) if size and size.isdigit() else start + len(response.content)
        more = response.headers.get("X-More-Data", "").lower() == "true"
        return ConsoleChunk(
            text=response.content.decode("utf-8", errors="replace"),
            next_offset=next_offset,
            more=more,
        )

    def test_report(self, full_name: str, number: int) -> dict[str, Any] | None:
        """The build's test report, or None when it has none."""
        with self._translated(f"read the test report of build #{number} of {full_name!r}"):
            report: dict[str, Any] | None = self._jenkins.get_build_test_report(full_name, number)
        return report

    def stop_build(self, full_name: str, number: int) -> None:
        with self._translated(f"stop build #{number} of {full_name!r}", job=full_name):
            self._jenkins.stop_build(full_name, number)

    def cancel_queue(self, queue_id: int) -> None:
        with self._translated(f"cancel queue item {queue_id}"):
            self._jenkins.cancel_queue(queue_id)
