"""Provisioning a venv: uv vs ``python -m venv`` + pip, cold and warm cache, on the real path.

Both sides are the project's own provisioning (machines/services/pool.py ``venv_provision``)
on a machine with the local connector (machines/local.py): with ``facts["uv_present"]`` it
runs ``uv venv --clear --seed`` + ``uv pip install`` with ``UV_CACHE_DIR`` beside the venvs,
otherwise ``python -m venv --clear`` + ``python -m pip install``. One provisioning is what a
slot goes through when it is rebuilt for a case (a reset that found it changed): make the
directory, create the venv, read its Python version, install the requirements file, record
``pip freeze``. The requirements are a test venv's: the runner's own (pyserial, pytest; see
``RUNNER_REQUIREMENTS`` in test_runner/execution.py) plus requests, pinned.

The local connector passes a scrubbed environment (PATH, HOME, ...) to its commands, so the
"host" is set up through those two: PATH finds ``python3`` in /usr/bin and ``uv`` in the
project's .venv/bin; HOME is a directory of this benchmark holding the host's configuration
(``~/.config/uv/uv.toml`` with ``system-certs = true``, because this network's registry
proxy presents a certificate only the system store knows; pip reads /etc/pip.conf) and
pip's cache (``~/.cache/pip``; the project passes no cache option to pip).

* cold: uv with an empty ``UV_CACHE_DIR`` (deleted before each run); pip with a new, empty
  HOME (so an empty ``~/.cache/pip``);
* warm: the same again with the cache the previous run filled.
3 repetitions of each, interleaved (uv, pip, uv, pip, ...), medians reported. Then the reset a
slot goes through each time a run gives it back (``venv_reset`` of an unchanged slot: its
freeze compared with the one recorded when it was made clean, ``uv pip freeze`` or
``python -m pip freeze``), 3 times on each. Besides, pip
with the wheels already on the host (``find-links`` + ``no-index`` in the host's pip.conf,
filled by ``pip download`` beforehand): the most a pip cache could ever save.

Prints figures; asserts nothing about time.  python bench/bench_provisioning.py [--reps N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    REPO_ROOT,
    bench_django,
    comparison,
    describe,
    machine_info,
    postgres_unavailable,
    result,
    skipped,
)

REQUIREMENTS = "pyserial==3.5\npytest==9.2.0\nrequests==2.34.2\n"
HOST_PYTHON = "/usr/bin/python3"
VENV_BIN = REPO_ROOT / ".venv" / "bin"


def _dir_mib(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return round(total / 1024 / 1024, 1)


class Host:
    """One local machine of the project, with its own work dir, pool of one slot, and HOME."""

    def __init__(self, name: str, base: Path, *, uv: bool) -> None:
        from machines import services
        from machines.models import Machine, Venv
        from machines.services.pool import requirements_hash

        self.work_dir = base / name
        self.work_dir.mkdir(parents=True)
        self.uv = uv
        self.machine = services.machine_create(
            actor=None, source="bench", name=name, hostname="localhost", username="bench",
            connector=Machine.Connector.LOCAL, work_dir=str(self.work_dir), python=HOST_PYTHON,
        )  # fmt: skip
        Machine.objects.filter(pk=self.machine.pk).update(facts={"uv_present": uv})
        self.venv = Venv.objects.create(
            machine=self.machine,
            slot=0,
            path=str(self.work_dir / "venvs" / "slot-0"),
            python=HOST_PYTHON,
            state=Venv.State.DIRTY,
            requirements_hash=requirements_hash(REQUIREMENTS),
        )
        (self.work_dir / "venvs").mkdir()
        Path(self.venv.path + ".requirements.txt").write_text(REQUIREMENTS)

    @property
    def uv_cache(self) -> Path:
        return self.work_dir / "uv-cache"

    def provision(self, home: Path, steps: dict[str, list[float]]) -> float:
        """One ``venv_provision`` of the slot; its wall time. Fails loudly if it did not work."""
        from machines import services
        from machines.models import Venv

        os.environ["HOME"] = str(home)
        Venv.objects.filter(pk=self.venv.pk).update(state=Venv.State.DIRTY)
        venv = Venv.objects.select_related("machine").get(pk=self.venv.pk)
        started = time.perf_counter()
        venv = services.venv_provision(venv=venv)
        elapsed = time.perf_counter() - started
        if venv.state != Venv.State.READY:
            raise RuntimeError(
                f"provisioning on {self.machine.name} failed: {venv.last_error}\n"
                f"{venv.last_output[-3000:]}"
            )
        installed = subprocess.run(
            [venv.path + "/bin/python", "-c", "import serial, pytest, requests"],
            capture_output=True, check=False,
        )  # fmt: skip
        if installed.returncode != 0:
            raise RuntimeError(f"the venv lacks its requirements: {installed.stderr.decode()}")
        for name, seconds in _drain_steps():
            steps[name].append(seconds)
        return elapsed

    def reset(self, home: Path) -> float:
        """One ``venv_reset`` of the slot left unchanged: its freeze matches, no rebuild."""
        from machines import services
        from machines.models import Venv

        os.environ["HOME"] = str(home)
        Venv.objects.filter(pk=self.venv.pk).update(state=Venv.State.DIRTY)
        venv = Venv.objects.select_related("machine").get(pk=self.venv.pk)
        started = time.perf_counter()
        venv = services.venv_reset(venv=venv)
        elapsed = time.perf_counter() - started
        steps = [name for name, _seconds in _drain_steps()]
        if venv.state != Venv.State.READY or "create venv" in steps:
            raise RuntimeError(f"the reset of {self.machine.name} rebuilt the slot: {steps}")
        return elapsed


_STEPS: list[tuple[str, float]] = []


def _step_name(rendered: str) -> str:
    words = rendered.split()
    if "install" in words:
        return "install requirements"
    if "freeze" in words:
        return "pip freeze"
    if "makedirs" in rendered:
        return "make directory"
    if "python_version" in rendered:
        return "python version"
    if "venv" in words:
        return "create venv"
    return words[0] if words else "?"


def _drain_steps() -> list[tuple[str, float]]:
    taken = list(_STEPS)
    _STEPS.clear()
    return taken


def _time_commands() -> None:
    """Records each command's duration as the local connector measures it (no change to it)."""
    from machines.local import LocalConnection

    original = LocalConnection.run

    def run(self: LocalConnection, cmd: Any, **kwargs: Any) -> Any:
        outcome = original(self, cmd, **kwargs)
        _STEPS.append((_step_name(self._render(cmd)), outcome.duration))
        return outcome

    LocalConnection.run = run  # type: ignore[method-assign]


def _home(base: Path, name: str, pip_conf: str = "") -> Path:
    home = base / "homes" / name
    uv_conf = home / ".config" / "uv"
    uv_conf.mkdir(parents=True)
    (uv_conf / "uv.toml").write_text("system-certs = true\n")
    if pip_conf:
        (home / ".config" / "pip").mkdir(parents=True)
        (home / ".config" / "pip" / "pip.conf").write_text(pip_conf)
    return home


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    reason = postgres_unavailable()
    if reason:
        return skipped(f"bench_provisioning needs PostgreSQL: {reason}")
    if not (VENV_BIN / "uv").exists():
        return skipped(
            f"bench_provisioning needs uv in {VENV_BIN} (pip install -r requirements-dev.txt)"
        )
    if not Path(HOST_PYTHON).exists():
        return skipped(f"bench_provisioning needs {HOST_PYTHON} on this host")

    base = Path(tempfile.mkdtemp(prefix="tms-bench-provisioning-"))
    saved_env = {key: os.environ.get(key) for key in ("PATH", "HOME")}
    # What the provisioning's commands see: the host's Python first, uv from the project's venv.
    os.environ["PATH"] = f"/usr/local/bin:/usr/bin:/bin:{VENV_BIN}"
    try:
        with bench_django("provisioning"):
            _time_commands()
            info = machine_info()
            print(describe(info))
            uv_host = Host("uv-host", base, uv=True)
            pip_host = Host("pip-host", base, uv=False)
            times: dict[str, list[float]] = defaultdict(list)
            steps: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            pip_home = base / "homes" / "pip-warm"
            uv_home = _home(base, "uv")

            for rep in range(args.reps):
                shutil.rmtree(uv_host.uv_cache, ignore_errors=True)
                times["uv cold"].append(uv_host.provision(uv_home, steps["uv cold"]))
                print(f"  cold {rep + 1}: uv {times['uv cold'][-1]:.2f} s", end="", flush=True)
                pip_home = _home(base, f"pip-cold-{rep}")
                times["pip cold"].append(pip_host.provision(pip_home, steps["pip cold"]))
                print(f", venv + pip {times['pip cold'][-1]:.2f} s", flush=True)
            uv_cache_mib = _dir_mib(uv_host.uv_cache)
            pip_cache_mib = _dir_mib(pip_home / ".cache")
            for rep in range(args.reps):
                times["uv warm"].append(uv_host.provision(uv_home, steps["uv warm"]))
                print(f"  warm {rep + 1}: uv {times['uv warm'][-1]:.2f} s", end="", flush=True)
                times["pip warm"].append(pip_host.provision(pip_home, steps["pip warm"]))
                print(f", venv + pip {times['pip warm'][-1]:.2f} s", flush=True)

            # What every slot goes through when a run gives it back (the freeze compared).
            for _rep in range(args.reps):
                times["uv reset"].append(uv_host.reset(uv_home))
                times["pip reset"].append(pip_host.reset(pip_home))

            # The best case for pip: every wheel already on the host, no index asked.
            wheelhouse = base / "wheelhouse"
            subprocess.run(
                [pip_host.venv.path + "/bin/python", "-m", "pip", "download", "--quiet",
                 "-d", str(wheelhouse), *REQUIREMENTS.split()],
                check=True, env={**os.environ, "HOME": str(pip_home)},
            )  # fmt: skip
            local_home = _home(
                base, "pip-local", f"[global]\nfind-links = {wheelhouse}\nno-index = true\n"
            )
            for _rep in range(args.reps):
                times["pip local wheels"].append(
                    pip_host.provision(local_home, steps["pip local wheels"])
                )
            local_runs = ", ".join(f"{t:.2f}" for t in times["pip local wheels"])
            print(f"  venv + pip, wheels on the host: {local_runs} s")
            info_after = machine_info()
    finally:
        for key, value in saved_env.items():
            if value is not None:
                os.environ[key] = value
        shutil.rmtree(base, ignore_errors=True)

    med = {name: median(values) for name, values in times.items()}
    step_medians = {
        kind: {name: round(median(values), 3) for name, values in by_step.items()}
        for kind, by_step in steps.items()
    }
    print()
    wanted = ", ".join(REQUIREMENTS.split())
    print(f"Requirements: {wanted}; {args.reps} runs each, medians")
    for name in ("uv cold", "pip cold", "uv warm", "pip warm", "pip local wheels"):
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"  {name:17s} {med[name]:6.2f} s   (runs: {runs})")
        print(
            "      " + ", ".join(f"{step} {sec:.2f} s" for step, sec in step_medians[name].items())
        )
    print(
        f"  reset of an unchanged slot (venv_reset, freeze compared): uv {med['uv reset']:.2f} s, "
        f"pip {med['pip reset']:.2f} s"
    )
    print(f"  cache after a cold run: uv {uv_cache_mib} MiB, pip {pip_cache_mib} MiB")
    warm_ratio = med["pip warm"] / med["uv warm"]
    cold_ratio = med["pip cold"] / med["uv cold"]
    local_ratio = med["pip local wheels"] / med["uv warm"]
    print(
        f"  warm: uv {warm_ratio:.1f}x faster; cold: uv {cold_ratio:.1f}x faster; "
        f"against pip with local wheels: {local_ratio:.1f}x"
    )
    load_before, load_after = info.get("load_average_1m"), info_after.get("load_average_1m")
    print(f"load average before {load_before}, after {load_after}")

    pip_cache_note = (
        "pip's cache stayed empty: this network's registry proxy sends no caching headers, so "
        "pip's HTTP cache stores nothing and a warm pip downloads again"
        if pip_cache_mib < 1
        else f"pip's cache held {pip_cache_mib} MiB"
    )
    warm_met = med["uv warm"] < 3 and warm_ratio >= 5
    comparisons = [
        comparison(
            "Provisioning, warm cache",
            metric="uv vs python -m venv + pip, median of venv_provision",
            unit="s",
            ours=med["uv warm"],
            naive=med["pip warm"],
            higher_is_better=False,
            goal="uv < 3 s and >= 5x",
            met=warm_met,
            note=f"{pip_cache_note}; with every wheel already on the host pip takes "
            f"{med['pip local wheels']:.2f} s ({med['pip local wheels'] / med['uv warm']:.1f}x uv)",
        ),
        comparison(
            "Provisioning, cold cache",
            metric="uv vs python -m venv + pip, median of venv_provision",
            unit="s",
            ours=med["uv cold"],
            naive=med["pip cold"],
            higher_is_better=False,
            note="empty UV_CACHE_DIR / empty ~/.cache/pip; uv also downloads its seed "
            "packages (pip, setuptools, wheel)",
        ),
    ]
    result(
        {
            "machine": info,
            "load_average_after": info_after.get("load_average_1m"),
            "requirements": REQUIREMENTS.split(),
            "repetitions": args.reps,
            "seconds": {name: [round(t, 3) for t in values] for name, values in times.items()},
            "median_s": {name: round(value, 3) for name, value in med.items()},
            "step_median_s": step_medians,
            "cache_mib": {"uv": uv_cache_mib, "pip": pip_cache_mib},
            "comparisons": comparisons,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
