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
