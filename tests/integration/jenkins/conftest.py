"""The stand-in Jenkins on a free loopback port, and a server record pointing at it; and the
lab of the run tests (a machine over loopback sshd with a simulated board) for the client."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from jenkins import services
from jenkins.models import JenkinsBuild, JenkinsServer
from tests.factories import make_jenkins_server
from tests.integration.runs.conftest import board_sim, lab  # noqa: F401  # the lab, for the client
from tests.jenkins_standin import StandInJenkins


@pytest.fixture(params=[True, False], ids=["crumbs", "no-crumbs"])
def crumbs(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def standin() -> Iterator[StandInJenkins]:
    jenkins = StandInJenkins().start()
    yield jenkins
    jenkins.stop()


@pytest.fixture
def standin_server(standin: StandInJenkins) -> JenkinsServer:
    return make_jenkins_server(
        url=standin.url, username=standin.user, api_token=standin.token, read_timeout=3
    )


def _drive(standin: StandInJenkins) -> Callable[..., JenkinsBuild]:
    def drive(build: JenkinsBuild, *, step: float = 0.25, max_polls: int = 400) -> JenkinsBuild:
        """Triggers (if not yet sent) and polls until the chain stops, moving the stand-in's
        clock by ``step`` between polls instead of waiting."""
        if build.queue_id is None and not build.is_done:
            services.jenkins_build_trigger(build=build)
        for _ in range(max_polls):
            outcome = services.jenkins_build_poll(build=build)
            if outcome.delay is None:
                break
            standin.clock.advance(step)
        else:
            pytest.fail(f"build still {outcome.build.status} after {max_polls} polls")
        build.refresh_from_db()
        return build

    return drive


@pytest.fixture
def drive(standin: StandInJenkins) -> Callable[..., JenkinsBuild]:
    return _drive(standin)
