"""Reads for the web pages: dashboard figures, flaky tests, queue positions, the live log.

Everything starts from the access-checked selectors (``test_runner.selectors.run_list``,
``machines.selectors.machine_list``), so a page never shows more than the API would.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from machines import selectors as machine_selectors
from machines.models import Board, Machine, Venv
from machines.selectors import User
from test_management_system.views import clean_text
from test_runner import selectors
from test_runner.models import RunEvent, RunStatus, TestResult, TestRun
from test_runner.services.results import format_event_line
from test_runner.services.runs import candidate_machines

# Event types that are not log lines (log_lines() skips the same ones).
NOT_LOG = frozenset({"heartbeat", "serial", "plan"})
LOG_TAIL = 2000
DELTA_LIMIT = 500
PASSING = frozenset({TestResult.Outcome.PASSED, TestResult.Outcome.XFAILED})
FAILING = frozenset(
    {TestResult.Outcome.FAILED, TestResult.Outcome.ERROR, TestResult.Outcome.XPASSED}
)


# --- Dashboard --------------------------------------------------------------------------------


def runs_in_progress(*, user: User) -> QuerySet[TestRun]:
    return selectors.run_list(user=user).exclude(status=RunStatus.DONE).order_by("queued_at")


def runs_recent_mine(*, user: User, limit: int = 10) -> list[TestRun]:
    return list(selectors.run_list(user=user).filter(requested_by_id=user.pk)[:limit])


@dataclass
class Bar:
    label: str
    value: float  # 0..1 of the chart's height
    text: str  # what the bar means, for its tooltip and screen readers
    x: float = 0
    y: float = 0
    width: float = 0
    height: float = 0
    tone: str = "ok"


@dataclass
class Chart:
    title: str
    bars: list[Bar]
    width: int = 560
    height: int = 140
    empty: str = "No finished runs in this period."
    axis: list[tuple[float, str]] = field(default_factory=list)

    def layout(self) -> Chart:
        """Places the bars: vertical, side by side, labels under every few."""
        if not self.bars:
            return self
        slot = self.width / len(self.bars)
        for i, bar in enumerate(self.bars):
            bar.width = min(max(slot * 0.7, 1), 48)
            bar.x = i * slot + (slot - bar.width) / 2
            bar.height = max(bar.value * (self.height - 20), 1 if bar.text else 0)
            bar.y = self.height - 20 - bar.height
        step = max(1, len(self.bars) // 7)
        self.axis = [
            (i * slot + slot / 2, bar.label) for i, bar in enumerate(self.bars) if i % step == 0
        ]
        return self


def _finished_since(user: User, since: dt.datetime) -> list[dict[str, Any]]:
    rows = (
        selectors.run_list(user=user)
        .filter(status=RunStatus.DONE, finished_at__gte=since)
        .order_by("finished_at")
        .values("outcome", "started_at", "finished_at", "machine__name")[:5000]
    )
    return [dict(row) for row in rows]


def _duration(row: dict[str, Any]) -> float | None:
    if row["started_at"] and row["finished_at"]:
        return (row["finished_at"] - row["started_at"]).total_seconds()
    return None


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def dashboard_charts(*, user: User, days: int = 14) -> dict[str, Chart]:
    """Pass rate and median duration per day, and pass rate per machine."""
    today = timezone.localdate()
    first = today - dt.timedelta(days=days - 1)
    since = timezone.make_aware(dt.datetime.combine(first, dt.time.min))
    rows = _finished_since(user, since)
    by_day: dict[dt.date, list[dict[str, Any]]] = defaultdict(list)
    by_machine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_day[timezone.localdate(row["finished_at"])].append(row)
        by_machine[row["machine__name"] or "(none)"].append(row)

    rate_bars, duration_bars = [], []
    durations_by_day: dict[dt.date, float] = {}
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        runs = by_day.get(day, [])
        label = day.strftime("%m-%d")
        if runs:
            passed = sum(r["outcome"] == "passed" for r in runs)
            rate = passed / len(runs)
            text = f"{day:%Y-%m-%d}: {passed} of {len(runs)} runs passed ({rate:.0%})"
            tone = "ok" if rate >= 0.9 else ("warn" if rate >= 0.5 else "bad")
            rate_bars.append(Bar(label, rate, text, tone=tone))
        else:
            rate_bars.append(Bar(label, 0, ""))
        times = sorted(d for d in (_duration(r) for r in runs) if d is not None)
        if times:
            durations_by_day[day] = times[len(times) // 2]
    longest = max(durations_by_day.values(), default=0) or 1
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        median = durations_by_day.get(day)
        text = f"{day:%Y-%m-%d}: median {human_duration(median)}" if median is not None else ""
        duration_bars.append(Bar(day.strftime("%m-%d"), (median or 0) / longest, text, tone="info"))

    machine_bars = []
    for name, runs in sorted(by_machine.items()):
        passed = sum(r["outcome"] == "passed" for r in runs)
        rate = passed / len(runs)
        machine_bars.append(
            Bar(name, rate, f"{name}: {passed} of {len(runs)} runs passed ({rate:.0%})",
                tone="ok" if rate >= 0.9 else ("warn" if rate >= 0.5 else "bad"))
        )  # fmt: skip
    return {
        "pass_rate": Chart(f"Pass rate per day, last {days} days", rate_bars).layout(),
        "duration": Chart(
            f"Median run duration per day (longest: {human_duration(longest)})", duration_bars
        ).layout(),
        "machines": Chart(f"Pass rate per machine, last {days} days", machine_bars).layout(),
    }


@dataclass
class FlakyTest:
    case: str
    case_id: int
    test_id: str
    name: str
    flips: int
    history: list[tuple[int, str]]  # (run id, outcome), oldest first


def flaky_tests(
    *, user: User, runs_per_case: int = 10, days: int = 30, limit: int = 20
) -> list[FlakyTest]:
    """Tests whose outcome flips between pass and fail at least twice over the last runs of
    their case (a test that broke once and was fixed flips once: that is not flaky)."""
    since = timezone.now() - dt.timedelta(days=days)
    runs = list(
        selectors.run_list(user=user)
        .filter(status=RunStatus.DONE, finished_at__gte=since, planned__gt=0)
        .order_by("-finished_at")
        .values("pk", "case_id")[:500]
    )
    kept: dict[int, list[int]] = defaultdict(list)
    for run in runs:
        if len(kept[run["case_id"]]) < runs_per_case:
            kept[run["case_id"]].append(run["pk"])
    run_ids = [pk for pks in kept.values() for pk in pks]
    results = (
        TestResult.objects.filter(run_id__in=run_ids, outcome__in=[*PASSING, *FAILING])
        .order_by("run__finished_at", "run_id")
        .values_list("run__case_id", "run__case__name", "test_id", "name", "run_id", "outcome")
    )
    series: dict[tuple[int, str], FlakyTest] = {}
    for case_id, case_name, test_id, name, run_id, outcome in results.iterator():
        item = series.setdefault(
            (case_id, test_id), FlakyTest(case_name, case_id, test_id, name, 0, [])
        )
        item.history.append((run_id, outcome))
    flaky = []
    for item in series.values():
        verdicts = [outcome in PASSING for _, outcome in item.history]
        item.flips = sum(a != b for a, b in pairwise(verdicts))
        if item.flips >= 2:
            flaky.append(item)
    flaky.sort(key=lambda f: (-f.flips, f.case, f.name))
    return flaky[:limit]


# --- Machines and what is free ----------------------------------------------------------------


@dataclass
class Availability:
    machine: Machine
    ready: int
    slots: int
    boards_free: int
    boards: int

    @property
    def usable(self) -> bool:
        return self.machine.is_usable and self.machine.status != Machine.Status.OFFLINE


def machines_availability(*, user: User) -> list[Availability]:
    machines = machine_selectors.machine_list(user=user).annotate(
        ready=Count("venvs", filter=Q(venvs__state=Venv.State.READY), distinct=True),
        slots=Count("venvs", distinct=True),
        boards_total=Count("boards", distinct=True),
        boards_free=Count(
            "boards", filter=Q(boards__lease_holder="", boards__locked=False), distinct=True
        ),
    )
    return [Availability(m, m.ready, m.slots, m.boards_free, m.boards_total) for m in machines]


def boards_visible(*, user: User) -> QuerySet[Board]:
    return machine_selectors.board_list(user=user)


def run_id_of_holder(holder: str) -> int | None:
    """ "run:42" -> 42: leases are held under the run's name."""
    prefix, _, number = holder.partition(":")
    return int(number) if prefix == "run" and number.isdigit() else None


# --- One run ----------------------------------------------------------------------------------


def queue_position(*, run: TestRun) -> int | None:
    """How many queued runs that want the same machines go before this one (0: it is next)."""
    if run.status != RunStatus.QUEUED:
        return None
    machines = candidate_machines(
        case=run.case, user=run.requested_by, machine=run.requested_machine,
        label=run.requested_label,
    )  # fmt: skip
    labels = {label.name for m in machines for label in m.labels.all()}
    wants = Q(requested_machine__in=machines) | Q(
        requested_machine__isnull=True, requested_label__in=labels
    )
    ahead = Q(priority__gt=run.priority) | Q(priority=run.priority, queued_at__lt=run.queued_at)
    ahead |= Q(priority=run.priority, queued_at=run.queued_at, pk__lt=run.pk)
    return TestRun.objects.filter(wants, ahead, status=RunStatus.QUEUED).count()


def _line_tone(kind: str, data: dict[str, Any]) -> str:
    if kind == "error":
        return "bad"
    if kind == "test_end":
        return "ok" if data.get("outcome") in ("passed", "xfailed", "skipped") else "bad"
    if kind in ("run_start", "run_end", "test_start"):
        return "mark"
    level = str(data.get("level", "")).upper()
    return {"ERROR": "bad", "CRITICAL": "bad", "WARNING": "warn"}.get(level, "")


def _as_line(
    seq: int, ts: dt.datetime, kind: str, data: dict[str, Any], tz: dt.tzinfo
) -> dict[str, Any] | None:
    if kind in NOT_LOG:
        return None
    text = format_event_line(seq, timezone.localtime(ts, tz), kind, data)
    if not text:
        return None
    return {"seq": seq, "text": clean_text(text), "tone": _line_tone(kind, data)}


def run_log_tail(
    *, run: TestRun, upto: int, tz: dt.tzinfo, limit: int = LOG_TAIL
) -> tuple[list[dict[str, Any]], bool]:
    """The last ``limit`` log lines up to seq ``upto``, and whether earlier ones were left out."""
    rows = list(
        RunEvent.objects.filter(run=run, seq__lte=upto)
        .exclude(type__in=NOT_LOG)
        .order_by("-seq")
        .values_list("seq", "ts", "type", "data")[: limit + 1]
    )
    omitted = len(rows) > limit
    lines = [_as_line(*row, tz) for row in reversed(rows[:limit])]
    return [line for line in lines if line], omitted


def _test_updates(kind: str, data: dict[str, Any]) -> dict[str, Any] | None:
    if kind == "test_start":
        return {"id": clean_text(data.get("test"), 1000), "outcome": "running"}
    if kind == "test_end":
        duration = data.get("duration_s")
        return {
            "id": clean_text(data.get("test"), 1000),
            "outcome": str(data.get("outcome") or "error"),
            "duration": human_duration(float(duration)) if duration is not None else "",
        }
    return None


def run_state(run: TestRun | dict[str, Any]) -> dict[str, Any]:
    """What the page shows of the run's state, as plain data (also sent live)."""
    get = run.get if isinstance(run, dict) else lambda name: getattr(run, name)
    planned = int(get("planned") or 0)
    done = sum(int(get(k) or 0) for k in ("passed", "failed", "errors", "skipped"))
    return {
        "status": get("status"),
        "outcome": get("outcome"),
        "planned": planned,
        "done": done,
        "status_message": clean_text(get("status_message") or "", 1000),
        "finished": get("status") == RunStatus.DONE,
    }


STATE_FIELDS = (
    "status", "outcome", "planned", "passed", "failed", "errors", "skipped", "status_message",
    "last_seq",
)  # fmt: skip


def run_delta(
    *, run_id: int, after: int, tz: dt.tzinfo, limit: int = DELTA_LIMIT
) -> dict[str, Any]:
    """What happened in a run after seq ``after``: log lines, tests planned / started / ended,
    and the run's state. ``last_seq`` is the seq to ask after next time; ``more`` says whether
    more events are already waiting."""
    row = TestRun.objects.filter(pk=run_id).values(*STATE_FIELDS).first()
    if row is None:
        return {"gone": True}
    events = list(
        RunEvent.objects.filter(run_id=run_id, seq__gt=after)
        .order_by("seq")
        .values_list("seq", "ts", "type", "data")[:limit]
    )
    lines, tests, plan = [], [], []
    for seq, ts, kind, data in events:
        line = _as_line(seq, ts, kind, data, tz)
        if line:
            lines.append(line)
        if kind == "plan":
            plan = [
                {
                    "id": clean_text(t.get("id"), 1000),
                    "name": clean_text(t.get("name") or t.get("id"), 500),
                }
                for t in (data.get("tests") or [])
                if isinstance(t, dict)
            ]
        update = _test_updates(kind, data)
        if update:
            tests.append(update)
    return {
        "last_seq": events[-1][0] if events else after,
        "more": len(events) == limit,
        "lines": lines,
        "plan": plan,
        "tests": tests,
        "state": run_state(row),
    }
