from typing import Any

from django.apps import AppConfig


class TestRunnerConfig(AppConfig):
    name = "test_runner"
    verbose_name = "Test cases and runs"

    def ready(self) -> None:
        from machines.models import Machine
        from machines.signals import machine_answered, slot_freed

        slot_freed.connect(
            _dispatch_waiting, sender=Machine, dispatch_uid="test_runner.dispatch_waiting"
        )
        machine_answered.connect(
            _reap_runners, sender=Machine, dispatch_uid="test_runner.reap_runners"
        )


def _dispatch_waiting(sender: Any, *, machine_id: int, **_kwargs: Any) -> None:
    from test_runner.services import runs_dispatch_waiting

    runs_dispatch_waiting(machine_id=machine_id)


def _reap_runners(sender: Any, *, machine_id: int, **_kwargs: Any) -> None:
    from machines.models import Machine
    from test_runner.execution import runners_reap

    machine = Machine.objects.filter(pk=machine_id).first()
    if machine is not None:
        runners_reap(machine=machine)
