"""Runs every bench/bench_*.py, prints their figures, a table of every side-by-side comparison,
and writes bench/results.json.

A benchmark prints readable lines and, last, one line ``RESULT_JSON {...}`` with its figures;
its ``comparisons`` (see ``_common.comparison``) are ours vs the naive design of the original
plan, measured in the same run. Benchmarks measure and print; they never pass or fail on speed.

    python bench/run.py                 # every benchmark
    python bench/run.py ingest uart     # those whose name contains one of the words
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def machine() -> dict[str, object]:
    info: dict[str, object] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        info["load_average_1m_at_start"] = round(os.getloadavg()[0], 2)
    except (OSError, ValueError, IndexError):
        pass
    return info


def _figure(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
    return str(value)


def table(benchmarks: dict[str, Any]) -> list[str]:
    """One line per comparison: what, ours, naive, ratio, goal, met."""
    rows = [("benchmark", "metric", "ours", "naive", "ours/naive", "goal", "met")]
    for name, figures in benchmarks.items():
        if not isinstance(figures, dict):
            rows.append((name, "(no figures: the benchmark failed)", "", "", "", "", ""))
            continue
        if figures.get("skipped"):
            rows.append((name, f"SKIPPED: {figures['skipped']}", "", "", "", "", ""))
            continue
        for item in figures.get("comparisons", []):
            unit = item.get("unit", "")
            met = item.get("met")
            rows.append(
                (
                    item.get("name", name),
                    item.get("metric", ""),
                    f"{_figure(item.get('ours'))} {unit}",
                    f"{_figure(item.get('naive'))} {unit}",
                    f"{item.get('ratio')}x",
                    item.get("goal", ""),
                    "-" if met is None else ("yes" if met else "NO"),
                )
            )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def main(argv: list[str]) -> int:
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(word in s.stem for word in argv)]
    results: dict[str, Any] = {"machine": machine(), "benchmarks": {}}
    if not scripts:
        print("No benchmark matches.")
    failed = False
    for script in scripts:
        print(f"\n=== {script.stem}", flush=True)
        started = time.monotonic()
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
        if isinstance(figures, dict):
            figures["wall_seconds"] = round(time.monotonic() - started, 1)
        if proc.returncode != 0:
            failed = True
            print(proc.stderr, file=sys.stderr)
            print(f"{script.stem} exited with {proc.returncode}", file=sys.stderr)
        results["benchmarks"][script.stem] = figures
    print("\n=== Ours vs the naive design (same machine, same run)")
    m = results["machine"]
    print(
        f"{m.get('cpus')} CPUs, {m.get('memory_gib', '?')} GiB, Python {m.get('python')}, "
        f"{m.get('platform')}, load average at start {m.get('load_average_1m_at_start', '?')}"
    )
    for line in table(results["benchmarks"]):
        print(line)
    out = BENCH_DIR / "results.json"
    if argv:
        # A partial run merges into the last full set instead of replacing it.
        try:
            previous = json.loads(out.read_text())
            previous["benchmarks"].update(results["benchmarks"])
            previous["machine"] = results["machine"]
            results = previous
        except (OSError, ValueError, KeyError):
            pass
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nFigures written to {out.relative_to(BENCH_DIR.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
