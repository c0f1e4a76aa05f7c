"""Builders for test data that goes through the services, as real data does."""

from __future__ import annotations

from functools import cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.contrib.auth import get_user_model

from machines import services
from machines.models import Board, Machine, Venv

PASSWORD = "pw-Plain-Text-7731"


@cache
def private_key_text(passphrase: str | None = None) -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    ).decode()


def make_user(username: str = "alice", *, admin: bool = False):
    user_model = get_user_model()
    if admin:
        return user_model.objects.create_superuser(username, f"{username}@lab.test", "pw-123456789")
    return user_model.objects.create_user(username, f"{username}@lab.test", "pw-123456789")


def make_machine(name: str = "lab-1", **overrides) -> Machine:
    fields: dict[str, Any] = {
        "actor": None,
        "source": "test",
        "name": name,
        "hostname": "127.0.0.1",
        "username": "tester",
        "password": PASSWORD,
    }
    fields.update(overrides)
    return services.machine_create(**fields)


def make_ready_venvs(
    machine: Machine, count: int, requirements_hash: str = "", *, first_slot: int | None = None
) -> list[Venv]:
    if first_slot is None:
        first_slot = Venv.objects.filter(machine=machine).count()
    return [
        Venv.objects.create(
            machine=machine,
            slot=slot,
            path=f"/tmp/venvs/{machine.name}/slot-{slot}",
            state=Venv.State.READY,
            requirements_hash=requirements_hash,
        )
        for slot in range(first_slot, first_slot + count)
    ]


def make_board(machine: Machine, name: str = "board-1", **fields) -> Board:
    fields.setdefault("serial_port", f"/dev/serial/by-id/{name}")
    return services.board_create(machine=machine, actor=None, source="test", name=name, **fields)


def make_jenkins_server(name: str = "ci", **overrides):
    from jenkins import services as jenkins_services

    fields: dict[str, Any] = {
        "actor": None,
        "source": "test",
        "name": name,
        # Nothing listens on the discard port: a server that is down, unless a test says else.
        "url": "http://127.0.0.1:9/",
        "username": "ci-bot",
        "api_token": "jenkins-token-0001",
        "connect_timeout": 2,
        "read_timeout": 5,
    }
    fields.update(overrides)
    return jenkins_services.jenkins_server_create(**fields)


def make_jenkins_job(server, full_name: str = "firmware/nightly", **overrides):
    from jenkins import services as jenkins_services

    return jenkins_services.jenkins_job_create(
        actor=None, source="test", server=server, full_name=full_name, **overrides
    )


def make_api_token(user, name: str = "pipeline", **overrides):
    """(token row, secret)."""
    from jenkins import services as jenkins_services

    return jenkins_services.api_token_create(user=user, name=name, source="test", **overrides)


def make_finished_run(user, machine: Machine, *, case_name: str = "smoke", outcome: str = "passed"):
    """A run of a small script case on ``machine`` (which needs a READY venv), created and
    finished through the run services without executing anything."""
    from test_runner import services as run_services
    from test_runner.models import TestCase

    case = TestCase.objects.filter(name=case_name).first() or run_services.case_create(
        actor=user, name=case_name, kind="script", entry_point="main.py",
        files={"main.py": "print('ok')\n"},
    )  # fmt: skip
    run = run_services.run_create(actor=user, case=case, machine=machine)
    finished = run_services.run_finish(
        run_id=run.pk, outcome=outcome, message=f"Finished: {outcome}.", by="test"
    )
    assert finished is not None
    return finished
