"""Pages for runs: dashboard, start, history (and its CSV), a run live, and its actions."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import Any

from django.contrib import messages
from django.db.models import Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from machines.selectors import is_admin
from test_management_system.errors import ApplicationError
from test_management_system.views import (
    clean_text,
    paginate,
    query_without_page,
    user_timezone,
    web_view,
)
from test_runner import selectors, services
from test_runner.filters import RunFilter
from test_runner.models import RunSource, RunStatus, TestRun
from test_runner.web import selectors as web_selectors
from test_runner.web.forms import HistoryForm, RunStartForm, apply_service_error

CSV_COLUMNS = [
    "id", "case", "case_version", "status", "outcome", "error_category", "requested_by",
    "source", "machine", "board", "requested_label", "queued_at", "started_at", "finished_at",
    "duration_s", "planned", "passed", "failed", "errors", "skipped", "status_message",
]  # fmt: skip


def _visible_run(request: HttpRequest, pk: int) -> TestRun:
    """The run, if this user may see it: someone else's run is simply not there (404)."""
    return get_object_or_404(selectors.run_list(user=request.user), pk=pk)


# --- Dashboard --------------------------------------------------------------------------------


@web_view
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    user = request.user
    return render(
        request,
        "test_runner/dashboard.html",
        {
            "in_progress": web_selectors.runs_in_progress(user=user)[:20],
            "recent": web_selectors.runs_recent_mine(user=user),
            "machines": web_selectors.machines_availability(user=user),
            "boards": web_selectors.boards_visible(user=user)[:50],
            "charts": web_selectors.dashboard_charts(user=user),
            "flaky": web_selectors.flaky_tests(user=user),
        },
    )


# --- Start ------------------------------------------------------------------------------------


@web_view
def run_start(request: HttpRequest) -> HttpResponse:
    user = request.user
    if request.method == "POST":
        form = RunStartForm(request.POST, user=user)
        if form.is_valid():
            data = form.cleaned_data
            try:
                run = services.run_create(
                    actor=user, case=data["case"], machine=data["machine"],
                    label=data["label"] or "", board=data["board"],
                    parameters=data["parameters"], timeout=data["timeout"],
                    priority=data["priority"] or 0, source=RunSource.UI,
                )  # fmt: skip
            except ApplicationError as exc:
                apply_service_error(form, exc, RunStartForm.SERVICE_FIELDS)
            else:
                messages.success(request, f"Run {run.pk} of {run.case.name} queued.")
                return redirect("web:run-detail", pk=run.pk)
    else:
        form = RunStartForm(
            initial={k: request.GET[k] for k in ("case", "machine", "label") if k in request.GET},
            user=user,
        )
    return render(
        request,
        "test_runner/run_start.html",
        {
            "form": form,
            "machines": web_selectors.machines_availability(user=user),
            "queued": selectors.run_list(user=user).filter(status=RunStatus.QUEUED).count(),
        },
        status=400 if form.errors else 200,
    )


# --- History ----------------------------------------------------------------------------------


def _history(request: HttpRequest) -> tuple[HistoryForm, QuerySet[TestRun]]:
    form = HistoryForm(request.GET or None)
    runs = selectors.run_list(user=request.user)
    if not form.is_bound:
        form = HistoryForm({"sort": "-queued_at"})
    if not form.is_valid():
        return form, runs.none()
    runs = RunFilter(form.filter_data(), queryset=runs, request=request).qs
    text = form.cleaned_data["q"].strip()
    if text:
        runs = runs.filter(
            Q(case__name__icontains=text)
            | Q(status_message__icontains=text)
            | Q(machine__name__icontains=text)
            | Q(requested_label__icontains=text)
            | (Q(pk=int(text)) if text.isdigit() else Q(pk__in=[]))
        )
    sort = form.cleaned_data["sort"] or "-queued_at"
    return form, runs.order_by(sort, "-pk")


@web_view
@require_GET
def run_history(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    form, runs = _history(request)
    if request.GET.get("format") == "csv":
        return _csv(runs)
    return render(
        request,
        "test_runner/history.html",
        {
            "form": form,
            "page": paginate(request, runs),
            "query": query_without_page(request),
            "is_admin": is_admin(request.user),
        },
        status=200 if form.is_valid() else 400,
    )


def _safe_cell(value: Any) -> str:
    # A cell a spreadsheet would run as a formula gets a leading quote.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv(runs: QuerySet[TestRun]) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def rows() -> Iterator[str]:
        yield writer.writerow(CSV_COLUMNS)
        for run in runs.iterator(chunk_size=500):
            duration = (
                (run.finished_at - run.started_at).total_seconds()
                if run.started_at and run.finished_at
                else ""
            )
            values = [
                run.pk, run.case.name, run.case_version.number, run.status, run.outcome,
                run.error_category, run.requested_by.get_username() if run.requested_by else "",
                run.source, run.machine.name if run.machine else "",
                str(run.board) if run.board else "", run.requested_label,
                *(timezone.localtime(t).isoformat() if t else ""
                  for t in (run.queued_at, run.started_at, run.finished_at)),
                duration, run.planned, run.passed, run.failed, run.errors, run.skipped,
                run.status_message,
            ]  # fmt: skip
            yield writer.writerow([_safe_cell(v) for v in values])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="runs.csv"'
    return response


# --- One run ----------------------------------------------------------------------------------


def _run_context(request: HttpRequest, run: TestRun) -> dict[str, Any]:
    started, finished = run.started_at, run.finished_at
    return {
        "run": run,
        "state": web_selectors.run_state(run),
        "can_control": selectors.user_can_control_run(user=request.user, run=run),
        "queue_position": web_selectors.queue_position(run=run),
        "duration": web_selectors.human_duration(
            ((finished or timezone.now()) - started).total_seconds() if started else None
        ),
        "percent": round(100 * run.done_tests / run.planned) if run.planned else 0,
    }


@web_view
@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _visible_run(request, pk)
    upto = run.last_seq  # the page shows events up to here; the live stream goes on after it
    lines, omitted = web_selectors.run_log_tail(run=run, upto=upto, tz=user_timezone(request))
    return render(
        request,
        "test_runner/run_detail.html",
        {
            **_run_context(request, run),
            "upto": upto,
            "lines": lines,
            "omitted": omitted,
            "results": selectors.run_results(run=run),
            "artifacts": run.artifacts.all(),
            "transitions": run.transitions.select_related("actor").order_by("at", "id"),
            "parameters": [(k, clean_text(v)) for k, v in sorted(run.parameters.items())],
        },
    )


@web_view
@require_GET
def run_summary(request: HttpRequest, pk: int) -> HttpResponse:
    """The run's state block alone: the page swaps it in when the state changes."""
    run = _visible_run(request, pk)
    return render(request, "test_runner/_run_summary.html", _run_context(request, run))


@web_view
@require_GET
def run_tests(request: HttpRequest, pk: int) -> HttpResponse:
    run = _visible_run(request, pk)
    return render(
        request,
        "test_runner/_run_tests.html",
        {"run": run, "results": selectors.run_results(run=run)},
    )


@web_view
@require_GET
def run_live(request: HttpRequest, pk: int) -> JsonResponse:
    """What happened after ``after`` (a seq): the fallback when the event stream is down."""
    run = _visible_run(request, pk)
    try:
        after = max(0, int(request.GET.get("after", "0")))
    except ValueError:
        return JsonResponse({"message": "after must be an integer."}, status=400)
    delta = web_selectors.run_delta(run_id=run.pk, after=after, tz=user_timezone(request))
    return JsonResponse(delta)


ACTIONS: dict[str, tuple[Callable[..., TestRun], str]] = {
    "cancel": (services.run_cancel, "Cancel requested for run {pk}."),
    "retry": (services.run_retry, "Run {new} queued as a retry of run {pk}."),
    "pause": (services.run_pause, "Pause requested for run {pk}."),
    "resume": (services.run_resume, "Resume requested for run {pk}."),
}


@web_view
@require_POST
def run_action(request: HttpRequest, pk: int, action: str) -> HttpResponseRedirect:
    if action not in ACTIONS:
        raise Http404("No such action.")
    run = _visible_run(request, pk)
    if not selectors.user_can_control_run(user=request.user, run=run):
        messages.error(request, "Only who started the run, or an admin, may control it.")
        return redirect("web:run-detail", pk=run.pk)
    service, done = ACTIONS[action]
    try:
        result = service(run=run, actor=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("web:run-detail", pk=run.pk)
    messages.success(request, done.format(pk=run.pk, new=result.pk))
    return redirect("web:run-detail", pk=result.pk)
