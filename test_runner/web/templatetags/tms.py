"""Template filters of the web pages: durations people read at a glance."""

from __future__ import annotations

from django import template
from django.utils import timezone

from test_runner.models import TestRun
from test_runner.web.selectors import human_duration

register = template.Library()


@register.filter
def run_duration(run: TestRun) -> str:
    """How long it ran (so far, while it runs); "-" before it starts."""
    if not run.started_at:
        return "-"
    return human_duration(((run.finished_at or timezone.now()) - run.started_at).total_seconds())


@register.filter
def seconds(value: float | None) -> str:
    return human_duration(value)
