"""The home page, the "who am I" API, and what every web page shares: sign-in required, times
in the viewer's timezone, text from runners and boards made safe to show."""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any, TypeVar
from urllib.parse import unquote

from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

# The browser writes its IANA timezone name here (static/js/app.js); the server renders times in it.
TZ_COOKIE = "tz"
PAGE_SIZE = 25
# CSI / OSC / two-byte escape sequences, then the C0 controls other than tab and newline.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_LINE = 4000

View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def user_timezone(request: HttpRequest) -> tzinfo:
    name = unquote(request.COOKIES.get(TZ_COOKIE, ""))
    if name and len(name) < 64:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return timezone.get_default_timezone()


def web_view(view: View) -> View:
    """A page for signed-in users, rendered in their timezone."""

    @login_required
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        timezone.activate(user_timezone(request))
        try:
            return view(request, *args, **kwargs)
        finally:
            timezone.deactivate()

    return wrapper  # type: ignore[return-value]


def clean_text(value: object, limit: int = MAX_LINE) -> str:
    """Runner and board text as plain text: colour codes and control characters removed, very
    long lines cut (the full text stays in the downloadable log)."""
    text = _CONTROL.sub("", _ANSI.sub("", str(value)))
    if len(text) > limit:
        text = text[:limit] + f" [... {len(text) - limit} more characters in the full log]"
    return text


def utc_offset_label(moment: datetime | None = None) -> str:
    """ "Europe/Paris (UTC+02:00)": shown next to times so that nobody guesses the zone."""
    now = timezone.localtime(moment or timezone.now())
    offset = now.strftime("%z")
    return f"{timezone.get_current_timezone_name()} (UTC{offset[:3]}:{offset[3:]})"


def paginate(request: HttpRequest, items: Any, per_page: int = PAGE_SIZE) -> Page:
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def query_without_page(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        from test_runner.web.views import dashboard

        return dashboard(request)
    return render(request, "home.html")


class MeApi(APIView):
    """Who the caller is, as the API sees them: scripts use it to check their credentials."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        email = serializers.EmailField()
        is_admin = serializers.BooleanField()

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        user = request.user
        data = {
            "id": user.pk,
            "username": user.get_username(),
            "email": getattr(user, "email", ""),
            "is_admin": bool(user.is_staff),
        }
        return Response(self.OutputSerializer(data).data)


def web_context(request: HttpRequest) -> dict[str, Any]:
    """For every template: the zone times are shown in, and whether the viewer is an admin."""
    user = getattr(request, "user", None)
    return {
        "tz_label": utc_offset_label(),
        "is_admin": bool(user and user.is_authenticated and getattr(user, "is_staff", False)),
    }
