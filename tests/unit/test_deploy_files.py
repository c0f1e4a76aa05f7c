"""docker-compose.yml and the Dockerfile cannot be run here (no Docker engine): check instead
that they parse and that every command, module and variable they name is real."""

import importlib
import re

import pytest
import yaml
from django.core.management import get_commands

from tests.conftest import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = (REPO_ROOT / ".env.example").read_text()


def test_the_stack_has_every_part():
    assert {"postgres", "redis", "migrate", "web", "worker", "beat"} <= set(SERVICES)


@pytest.mark.parametrize("name", ["postgres", "redis", "web", "worker"])
def test_long_running_services_have_healthchecks(name):
    assert SERVICES[name]["healthcheck"]["test"]


def test_app_services_wait_for_healthy_dependencies_and_migrations():
    for name in ("web", "worker", "beat"):
        deps = SERVICES[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"


def _check_command(cmd: list[str]) -> None:
    program = cmd[0]
    if program == "python" and cmd[1] == "manage.py":
        assert cmd[2] in get_commands(), f"no management command {cmd[2]!r}"
    elif program == "uvicorn":
        module, attr = cmd[1].split(":")
        assert hasattr(importlib.import_module(module), attr)
    elif program == "celery":
        assert cmd[1:3] == ["-A", "test_management_system"]
        assert cmd[3] in {"worker", "beat"}
    else:
        assert program in {"redis-server"}, f"unexpected program {program!r}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_commands_name_real_programs_and_modules(name):
    cmd = SERVICES[name].get("command")
    if cmd is not None:
        _check_command(cmd)


def test_dockerfile_cmd_matches_a_real_entry_point():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd
    _check_command(yaml.safe_load(cmd.group(1)))
    assert "FROM python:3.11" in dockerfile  # the Python the pinned requirements are tested on


def test_app_settings_the_stack_passes_are_documented():
    app_env = SERVICES["web"]["environment"]
    for var in app_env:
        assert re.search(rf"^#?\s*{var}=", ENV_EXAMPLE, re.M), f"{var} missing in .env.example"
    assert app_env["TMS_ENV"] == "production"
