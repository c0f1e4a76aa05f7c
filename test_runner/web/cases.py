"""Pages for test cases: list, detail with versions and recent results, create, edit."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from test_management_system.errors import ApplicationError
from test_management_system.views import paginate, query_without_page, web_view
from test_runner import selectors, services
from test_runner.models import TestCase
from test_runner.web.forms import CaseForm, apply_service_error


def _visible_case(request: HttpRequest, pk: int) -> TestCase:
    return get_object_or_404(selectors.case_list(user=request.user), pk=pk)


@web_view
@require_GET
def case_list(request: HttpRequest) -> HttpResponse:
    cases = selectors.case_list(user=request.user)
    text = request.GET.get("q", "").strip()[:200]
    if text:
        cases = cases.filter(Q(name__icontains=text) | Q(description__icontains=text))
    if request.GET.get("archived") != "1":
        cases = cases.filter(archived=False)
    return render(
        request,
        "test_runner/case_list.html",
        {"page": paginate(request, cases), "q": text, "query": query_without_page(request),
         "show_archived": request.GET.get("archived") == "1"},
    )  # fmt: skip


@web_view
@require_GET
def case_detail(request: HttpRequest, pk: int) -> HttpResponse:
    case = _visible_case(request, pk)
    version_number = request.GET.get("version", "")
    versions = case.versions.select_related("created_by").order_by("-number")
    shown = (
        versions.filter(number=int(version_number)).first() if version_number.isdigit() else None
    ) or case.current_version
    return render(
        request,
        "test_runner/case_detail.html",
        {
            "case": case,
            "versions": versions,
            "shown": shown,
            "files": sorted((shown.files or {}).items()) if shown else [],
            # The user's own runs (admins: everyone's), as in history.
            "runs": selectors.run_list(user=request.user).filter(case=case)[:20],
            "can_edit": selectors.user_can_edit_case(user=request.user, case=case),
        },
    )


def _save(request: HttpRequest, form: CaseForm, case: TestCase | None) -> TestCase | None:
    try:
        files = form.files_after(request.FILES.getlist("uploads"))
        fields = form.service_fields()
        if case is None:
            return services.case_create(actor=request.user, files=files, **fields)
        return services.case_update(
            case=case, actor=request.user, change_note=form.cleaned_data["change_note"],
            files=files, **fields,
        )  # fmt: skip
    except ApplicationError as exc:
        apply_service_error(form, exc, CaseForm.SERVICE_FIELDS)
    except DjangoValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    return None


@web_view
def case_create(request: HttpRequest) -> HttpResponse:
    form = CaseForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        case = _save(request, form, None)
        if case is not None:
            messages.success(request, f"Test case {case.name} created (version 1).")
            return redirect("web:case-detail", pk=case.pk)
    return render(
        request,
        "test_runner/case_form.html",
        {"form": form, "case": None},
        status=400 if form.errors else 200,
    )


@web_view
def case_edit(request: HttpRequest, pk: int) -> HttpResponse:
    case = _visible_case(request, pk)
    if not selectors.user_can_edit_case(user=request.user, case=case):
        raise PermissionDenied("Only the case's owner or an admin may change it.")
    current = case.current_version
    files = dict(current.files) if current else {}
    if request.method == "POST":
        form = CaseForm(request.POST, request.FILES, existing_files=files)
        if form.is_valid():
            before = case.current_version_id
            saved = _save(request, form, case)
            if saved is not None:
                saved.refresh_from_db()
                note = (
                    f"saved as version {saved.current_version.number}"
                    if saved.current_version_id != before and saved.current_version
                    else "saved; what runs did not change, so no new version"
                )
                messages.success(request, f"Test case {saved.name} {note}.")
                return redirect("web:case-detail", pk=case.pk)
    else:
        initial = {
            "name": case.name, "description": case.description, "kind": case.kind,
            "required_os": case.required_os, "needs_board": case.needs_board,
            "default_timeout": case.default_timeout,
            "labels": ", ".join(case.labels.values_list("name", flat=True)),
            "board_labels": ", ".join(case.board_labels.values_list("name", flat=True)),
            "entry_point": current.entry_point if current else "",
            "arguments": "\n".join(current.arguments) if current else "",
            "requirements": current.requirements if current else "",
        }  # fmt: skip
        form = CaseForm(initial=initial, existing_files=files)
    return render(
        request,
        "test_runner/case_form.html",
        {"form": form, "case": case},
        status=400 if form.errors else 200,
    )
