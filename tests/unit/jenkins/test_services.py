import pytest

from jenkins.services import builds
from tests.jenkins_standin import sample_test_report


def test_console_is_bounded_and_cut_at_a_line_start():
    text, dropped = builds.append_console("", 0, "aaaa\nbbbb\n", limit=100)
    assert (text, dropped) == ("aaaa\nbbbb\n", 0)
    text, dropped = builds.append_console(text, dropped, "cccc\n", limit=12)
    assert (text, dropped) == ("bbbb\ncccc\n", 5)
    text, dropped = builds.append_console(text, dropped, "d" * 30, limit=12)
    assert len(text) == 12 and dropped == 5 + 40 - 12
    assert text == "d" * 12


def test_test_report_import_keeps_counts_and_bounds_cases(monkeypatch):
    report = builds.import_test_report(sample_test_report(failed=2))
    assert (report["passed"], report["failed"], report["skipped"]) == (2, 2, 1)
    assert report["total_cases"] == 5 and report["cases_truncated"] is False
    outcomes = [c["outcome"] for c in report["cases"]]
    assert outcomes == ["passed", "passed", "skipped", "failed", "failed"]
    monkeypatch.setattr(builds, "MAX_TEST_CASES", 2)
    monkeypatch.setattr(builds, "MAX_CASE_TEXT", 5)
    cut = builds.import_test_report(sample_test_report(failed=1))
    assert len(cut["cases"]) == 2 and cut["total_cases"] == 4 and cut["cases_truncated"]
    assert builds.import_test_report({"suites": []})["cases"] == []


@pytest.mark.parametrize(("failures", "delay"), [(1, 5.0), (2, 10.0), (3, 20.0), (9, 300.0)])
def test_error_backoff_doubles_up_to_a_cap(failures, delay):
    assert builds._error_delay(failures) == delay


def test_idle_polls_slow_down_up_to_a_cap():
    assert builds._idle_delay(0) == builds.POLL_MIN
    assert builds._idle_delay(1) == 1.5
    assert builds._idle_delay(50) == builds.POLL_MAX
