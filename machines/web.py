"""Web pages for machines and boards: what users may see (their assigned machines; admins all),
and for admins the actions of the admin site (check, trust host key, provision, maintenance,
board lock), each through the services so that it is audited. Credentials are never read."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from machines import selectors, services, ssh
from machines.models import Board, Machine, Venv
from test_management_system.errors import ApplicationError
from test_management_system.views import clean_text, web_view

SOURCE = "web"
app_name = "lab"


def _holder_run(holder: str) -> int | None:
    """Leases are held as "run:<id>"."""
    prefix, _, number = holder.partition(":")
    return int(number) if prefix == "run" and number.isdigit() else None


def _visible_machine(request: HttpRequest, pk: int) -> Machine:
    return get_object_or_404(selectors.machine_list(user=request.user), pk=pk)


def _admin_machine(request: HttpRequest, pk: int) -> Machine:
    machine = _visible_machine(request, pk)
    if not selectors.is_admin(request.user):
        raise PermissionDenied("Only admins may do that.")
    return machine


@web_view
@require_GET
def machine_list(request: HttpRequest) -> HttpResponse:
    machines = selectors.machine_list(user=request.user).annotate(
        ready=Count("venvs", filter=Q(venvs__state=Venv.State.READY), distinct=True),
        leased=Count("venvs", filter=Q(venvs__state=Venv.State.LEASED), distinct=True),
        slots=Count("venvs", distinct=True),
        board_count=Count("boards", distinct=True),
    )
    return render(request, "machines/machine_list.html", {"machines": machines})


@web_view
@require_GET
def machine_detail(request: HttpRequest, pk: int) -> HttpResponse:
    machine = _visible_machine(request, pk)
    venvs = [
        (venv, _holder_run(venv.lease_holder))
        for venv in selectors.venv_list(user=request.user).filter(machine=machine)
    ]
    boards = [
        (board, _holder_run(board.lease_holder))
        for board in selectors.board_list(user=request.user).filter(machine=machine)
    ]
    facts = machine.facts or {}
    return render(
        request,
        "machines/machine_detail.html",
        {
            "machine": machine,
            "venvs": venvs,
            "boards": boards,
            "facts": facts,
            "warnings": [clean_text(w, 500) for w in facts.get("warnings") or []],
            "is_admin": selectors.is_admin(request.user),
        },
    )


@web_view
@require_POST
def machine_check(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    machine = _admin_machine(request, pk)
    result = services.machine_check(machine=machine, actor=request.user, source=SOURCE)
    level = messages.SUCCESS if result.ok else messages.ERROR
    messages.add_message(request, level, f"{machine.name}: {result.status}. {result.message}")
    for warning in result.warnings:
        messages.warning(request, f"{machine.name}: {warning}")
    return redirect("lab:machine-detail", pk=machine.pk)


@web_view
def machine_trust_host_key(request: HttpRequest, pk: int) -> HttpResponse:
    """GET shows the key the machine offers now; POST pins it if it is still that key."""
    machine = _admin_machine(request, pk)
    if request.method == "POST":
        fingerprint = request.POST.get("fingerprint", "")
        try:
            services.machine_trust_host_key(
                machine=machine, actor=request.user, source=SOURCE, fingerprint=fingerprint
            )
        except (ssh.SSHError, ApplicationError) as exc:
            messages.error(request, f"{machine.name}: {exc.message}")
        else:
            messages.success(request, f"{machine.name}: trusted host key {fingerprint}.")
        return redirect("lab:machine-detail", pk=machine.pk)
    offered, error = None, ""
    try:
        offered = services.machine_fetch_host_key(machine=machine)
    except ssh.SSHError as exc:
        error = exc.message
    return render(
        request,
        "machines/trust_host_key.html",
        {"machine": machine, "offered": offered, "error": error},
    )


@web_view
@require_POST
def machine_pool(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    machine = _admin_machine(request, pk)
    try:
        size = int(request.POST.get("size") or machine.max_concurrent_runs)
    except ValueError:
        size = 0
    if not 1 <= size <= 64:
        messages.error(request, "The pool size must be a number from 1 to 64.")
        return redirect("lab:machine-detail", pk=machine.pk)
    services.venv_pool_request(machine=machine, size=size, actor=request.user, source=SOURCE)
    messages.success(request, f"Provisioning {size} venv(s) on {machine.name}; reload to follow.")
    return redirect("lab:machine-detail", pk=machine.pk)


@web_view
@require_POST
def machine_maintenance(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    machine = _admin_machine(request, pk)
    on = request.POST.get("on") == "1"
    reason = request.POST.get("reason", "").strip()[:255]
    services.machine_set_maintenance(
        machine=machine, actor=request.user, source=SOURCE, on=on,
        reason=reason or f"set by {request.user.get_username()}",
    )  # fmt: skip
    messages.success(request, f"{machine.name} is {'in maintenance' if on else 'back in service'}.")
    return redirect("lab:machine-detail", pk=machine.pk)


@web_view
@require_GET
def board_list(request: HttpRequest) -> HttpResponse:
    boards = [
        (board, _holder_run(board.lease_holder))
        for board in selectors.board_list(user=request.user)
    ]
    return render(
        request,
        "machines/board_list.html",
        {"boards": boards, "is_admin": selectors.is_admin(request.user)},
    )


@web_view
@require_POST
def board_lock(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    board: Board = get_object_or_404(selectors.board_list(user=request.user), pk=pk)
    if not selectors.is_admin(request.user):
        raise PermissionDenied("Only admins may lock boards.")
    locked = request.POST.get("locked") == "1"
    services.board_set_locked(
        board=board, actor=request.user, source=SOURCE, locked=locked,
        reason=request.POST.get("reason", "").strip()[:255]
        or f"locked by {request.user.get_username()}",
    )  # fmt: skip
    messages.success(request, f"Board {board} {'locked' if locked else 'unlocked'}.")
    if request.POST.get("back") == "machine":
        return redirect("lab:machine-detail", pk=board.machine_id)
    return redirect("lab:board-list")


urlpatterns = [
    path("machines/", machine_list, name="machine-list"),
    path("machines/<int:pk>/", machine_detail, name="machine-detail"),
    path("machines/<int:pk>/check/", machine_check, name="machine-check"),
    path("machines/<int:pk>/trust-host-key/", machine_trust_host_key, name="machine-trust"),
    path("machines/<int:pk>/pool/", machine_pool, name="machine-pool"),
    path("machines/<int:pk>/maintenance/", machine_maintenance, name="machine-maintenance"),
    path("boards/", board_list, name="board-list"),
    path("boards/<int:pk>/lock/", board_lock, name="board-lock"),
]
