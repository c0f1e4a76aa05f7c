"""Every write that matters on test cases and runs goes through here."""

from test_runner.services.cases import case_create, case_update
from test_runner.services.results import events_store, junit_xml, log_lines, results_close_open
from test_runner.services.runs import (
    run_cancel,
    run_create,
    run_finish,
    run_pause,
    run_resume,
    run_retry,
    run_transition,
)
from test_runner.services.scheduling import runs_dispatch_waiting, runs_retention, runs_sweep

__all__ = [
    "case_create",
    "case_update",
    "events_store",
    "junit_xml",
    "log_lines",
    "results_close_open",
    "run_cancel",
    "run_create",
    "run_finish",
    "run_pause",
    "run_resume",
    "run_retry",
    "run_transition",
    "runs_dispatch_waiting",
    "runs_retention",
    "runs_sweep",
]
