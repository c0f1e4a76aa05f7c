from typing import Any

from django.apps import AppConfig


class TestRunnerConfig(AppConfig):
    name = "test_runner"
    verbose_name = "Test cases and runs"

    def ready(self) -> None:
        from machines.models import Machine
        from machines.signals import slot_freed

        slot_freed.connect(
            _dispatch_waiting, sender=Machine, dispatch_uid="test_runner.dispatch_waiting"
        )


def _dispatch_waiting(sender: Any, *, machine_id: int, **_kwargs: Any) -> None:
    from test_runner.services import runs_dispatch_waiting

    runs_dispatch_waiting(machine_id=machine_id)
