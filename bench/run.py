"""Runs every bench/bench_*.py, prints their figures and writes bench/results.json.

A benchmark prints readable lines and, last, one line ``RESULT_JSON {...}`` with its figures.
Benchmarks measure and print; they never pass or fail on speed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def main() -> int:
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    results: dict[str, object] = {"machine": machine(), "benchmarks": {}}
    if not scripts:
        print("No benchmarks yet.")
    failed = False
    for script in scripts:
        print(f"\n=== {script.stem}")
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            check=False,
        )
        figures = None
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT_JSON "):
                figures = json.loads(line.removeprefix("RESULT_JSON "))
            else:
                print(line)
        if proc.returncode != 0:
            failed = True
            print(proc.stderr, file=sys.stderr)
            print(f"{script.stem} exited with {proc.returncode}", file=sys.stderr)
        results["benchmarks"][script.stem] = figures  # type: ignore[index]
    out = BENCH_DIR / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nFigures written to {out.relative_to(BENCH_DIR.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
