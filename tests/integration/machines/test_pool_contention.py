"""Many workers leasing from one small pool at once, on PostgreSQL's real row locks."""

import random
import threading
import time
from collections import Counter

import pytest
from django.db import connection

from machines import services
from machines.models import Venv
from tests.factories import make_machine, make_ready_venvs

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

THREADS = 50
SLOTS = 10
ROUNDS = 8


def test_fifty_threads_ten_venvs_zero_double_leases():
    machine = make_machine(max_concurrent_runs=SLOTS)
    make_ready_venvs(machine, SLOTS)
    held: dict[int, str] = {}  # venv id -> holder, as the threads believe it
    guard = threading.Lock()
    double_leases: list[tuple[int, str, str]] = []
    leases: Counter[str] = Counter()
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        try:
            start.wait()
            for round_ in range(ROUNDS):
                holder = f"run:{n}:{round_}"
                venv = None
                for _ in range(200):
                    venv = services.venv_lease(machine=machine, holder=holder)
                    if venv is not None:
                        break
                    time.sleep(random.uniform(0.001, 0.01))
                if venv is None:
                    continue
                with guard:
                    if venv.pk in held:
                        double_leases.append((venv.pk, held[venv.pk], holder))
                    held[venv.pk] = holder
                    leases[holder] += 1
                # The database agrees on who holds it.
                assert Venv.objects.get(pk=venv.pk).lease_holder == holder
                time.sleep(random.uniform(0, 0.003))
                with guard:
                    del held[venv.pk]
                services.venv_release(holder=holder, reset=False)
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert double_leases == []
    assert sum(leases.values()) >= THREADS  # real contention happened, not one thread alone
    assert Venv.objects.filter(state=Venv.State.LEASED).count() == 0
    assert Venv.objects.filter(state=Venv.State.READY).count() == SLOTS


def test_fifty_simultaneous_first_leases_get_exactly_the_ten_slots():
    machine = make_machine(max_concurrent_runs=SLOTS)
    make_ready_venvs(machine, SLOTS)
    got: list[int | None] = [None] * THREADS
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        try:
            start.wait()
            venv = services.venv_lease(machine=machine, holder=f"run:{n}")
            got[n] = venv.pk if venv else None
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [pk for pk in got if pk is not None]
    assert len(winners) == SLOTS
    assert len(set(winners)) == SLOTS
    holders = set(Venv.objects.values_list("lease_holder", flat=True))
    assert len(holders) == SLOTS and "" not in holders
