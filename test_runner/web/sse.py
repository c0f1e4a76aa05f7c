"""A run's live events as Server-Sent Events.

The database is the truth: the stream polls the run's ``last_seq`` (one indexed row, ten times
a second) and, when it moved, sends what came after the last seq it sent. The same code
serves the embedded default (SQLite, no Redis) and production. A page that loses the stream
asks ``/runs/<pk>/live/?after=<seq>`` for what it missed and opens a new stream after that
seq, so nothing is lost or shown twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import tzinfo
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from test_management_system.views import user_timezone
from test_runner import selectors
from test_runner.models import RunStatus, TestRun
from test_runner.web import selectors as web_selectors

POLL_SECONDS = 0.1
KEEPALIVE_SECONDS = 15.0
# A stream ends after this long and the browser opens a new one: no connection lives forever.
MAX_STREAM_SECONDS = 300.0


def message(event: str, data: dict[str, Any], seq: int | None = None) -> str:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _after(request: HttpRequest) -> int:
    raw = request.GET.get("after") or request.headers.get("Last-Event-ID") or "0"
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


async def run_events_stream(
    run_id: int, after: int, tz: tzinfo, *, max_seconds: float = MAX_STREAM_SECONDS
) -> AsyncIterator[str]:
    sent = after
    last_state: dict[str, Any] | None = None
    started = last_write = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        row = await TestRun.objects.filter(pk=run_id).values(*web_selectors.STATE_FIELDS).afirst()
        if row is None:
            yield message("end", {"gone": True})
            return
        if row["last_seq"] > sent:
            delta = await sync_to_async(web_selectors.run_delta)(run_id=run_id, after=sent, tz=tz)
            sent = delta["last_seq"]
            last_state = delta["state"]
            last_write = time.monotonic()
            yield message("delta", delta, seq=sent)
            if delta["more"]:
                continue
        state = web_selectors.run_state(row)
        if state != last_state:
            last_state = state
            last_write = time.monotonic()
            yield message("state", state)
        if row["status"] == RunStatus.DONE and sent >= row["last_seq"]:
            yield message("end", {"last_seq": sent})
            return
        now = time.monotonic()
        if now - started > max_seconds:
            return
        if now - last_write > KEEPALIVE_SECONDS:
            last_write = now
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)


@require_GET
async def run_stream(request: HttpRequest, pk: int) -> HttpResponse | StreamingHttpResponse:
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    exists = await selectors.run_list(user=user).filter(pk=pk).aexists()
    if not exists:
        return HttpResponse("No such run.", status=404, content_type="text/plain")
    response = StreamingHttpResponse(
        run_events_stream(pk, _after(request), user_timezone(request)),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy must pass each event on at once
    return response
