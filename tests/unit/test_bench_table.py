"""The benchmark runner's table: every comparison is shown with its ratio and whether its goal
was met, and a benchmark that failed or was skipped says so instead of vanishing."""

from __future__ import annotations

from bench._common import comparison
from bench.run import table


def test_ratio_is_how_many_times_better_ours_is_in_either_direction() -> None:
    faster = comparison(
        "dispatch", metric="median", unit="ms", ours=100, naive=450, higher_is_better=False
    )
    more = comparison(
        "ingest", metric="lines/s", unit="lines/s", ours=20000, naive=125, higher_is_better=True
    )
    assert faster["ratio"] == 4.5
    assert more["ratio"] == 160.0


def test_table_lists_each_comparison_and_names_missed_goals() -> None:
    benchmarks = {
        "bench_runs_list": {
            "comparisons": [
                comparison(
                    "runs list", metric="p95", unit="ms", ours=57.0, naive=900.0,
                    higher_is_better=False, goal="p95 < 50 ms", met=False,
                ),
            ]
        },
        "bench_dispatch": None,
        "bench_provisioning": {"skipped": "uv is not installed"},
    }  # fmt: skip
    lines = table(benchmarks)
    body = "\n".join(lines)
    assert lines[0].split()[:2] == ["benchmark", "metric"]
    row = next(line for line in lines if line.startswith("runs list"))
    assert " 57 ms" in row and "900 ms" in row and "15.8x" in row and row.endswith("NO")
    assert any(
        line.startswith("bench_dispatch") and line.endswith("(no figures: the benchmark failed)")
        for line in lines
    )
    assert "SKIPPED: uv is not installed" in body
