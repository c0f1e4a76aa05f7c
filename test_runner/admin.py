from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from test_runner.models import (
    IngestToken,
    RunTransition,
    TestCase,
    TestCaseVersion,
    TestResult,
    TestRun,
)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VersionInline(ReadOnlyInline):
    model = TestCaseVersion
    fields = [
        "number",
        "entry_point",
        "requirements_hash",
        "change_note",
        "created_by",
        "created_at",
    ]


@admin.register(TestCase)
class TestCaseAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "needs_board", "owner", "archived", "updated_at"]
    list_filter = ["kind", "archived", "needs_board"]
    search_fields = ["name", "description"]
    inlines = [VersionInline]
    readonly_fields = ["current_version", "owner", "created_at", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created through the API or UI, which keep versions


class TransitionInline(ReadOnlyInline):
    model = RunTransition
    fields = ["at", "from_status", "to_status", "outcome", "actor", "by", "message"]


class ResultInline(ReadOnlyInline):
    model = TestResult
    fields = ["order", "test_id", "outcome", "duration", "message"]


@admin.register(TestRun)
class TestRunAdmin(admin.ModelAdmin):
    list_display = ["id", "case", "status", "outcome", "machine", "requested_by", "queued_at"]
    list_filter = ["status", "outcome", "source", "error_category"]
    search_fields = ["case__name", "status_message"]
    inlines = [TransitionInline, ResultInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in TestRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(IngestToken)
class IngestTokenAdmin(admin.ModelAdmin):
    """Tokens are made with ``manage.py create_ingest_token`` (which shows the secret once);
    here they are listed and revoked (set revoked_at)."""

    list_display = ["name", "machine", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["machine"]
    search_fields = ["name", "prefix", "machine__name"]
    readonly_fields = ["machine", "name", "prefix", "key_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
