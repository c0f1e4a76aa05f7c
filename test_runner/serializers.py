from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from machines.models import Board, Machine
from machines.serializers import LABELS
from test_runner import selectors
from test_runner.models import (
    ErrorCategory,
    RunArtifact,
    RunEvent,
    RunOutcome,
    RunSource,
    RunStatus,
    TestCase,
    TestCaseVersion,
    TestResult,
    TestRun,
)


class VersionOutput(serializers.ModelSerializer):
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = TestCaseVersion
        fields = [
            "id", "number", "files", "entry_point", "arguments", "requirements",
            "requirements_hash", "change_note", "created_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class CaseOutput(serializers.ModelSerializer):
    labels: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True
    )
    board_labels: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True
    )
    owner: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    current_version = VersionOutput(read_only=True)

    class Meta:
        model = TestCase
        fields = [
            "id", "name", "description", "kind", "labels", "required_os", "needs_board",
            "board_labels", "default_timeout", "owner", "current_version", "archived",
            "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class CaseInput(serializers.Serializer):
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    description = serializers.CharField(required=False, allow_blank=True)
    kind = serializers.ChoiceField(choices=TestCase.Kind.choices)
    entry_point = serializers.CharField(max_length=500)
    files = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False
    )
    arguments = serializers.ListField(
        child=serializers.CharField(max_length=1000), required=False, max_length=100
    )
    requirements = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    required_os = serializers.ChoiceField(
        choices=Machine.Os.choices, required=False, allow_blank=True,
        help_text="Empty: any OS.",
    )  # fmt: skip
    needs_board = serializers.BooleanField(required=False)
    board_labels = LABELS
    labels = LABELS
    default_timeout = serializers.IntegerField(min_value=5, max_value=7 * 24 * 3600, required=False)


class CaseUpdateInput(CaseInput):
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100, required=False)
    kind = serializers.ChoiceField(choices=TestCase.Kind.choices, required=False)
    entry_point = serializers.CharField(max_length=500, required=False)
    change_note = serializers.CharField(max_length=255, required=False, allow_blank=True)


class RunInput(serializers.Serializer):
    case = serializers.SlugRelatedField(
        slug_field="name", queryset=TestCase.objects.all(),
        help_text="The case's name.",
    )  # fmt: skip
    machine = serializers.SlugRelatedField(
        slug_field="name", queryset=Machine.objects.all(), required=False, allow_null=True,
        help_text="A machine's name; or give label instead.",
    )  # fmt: skip
    # DRF takes declared fields off the class, so these names do not shadow Field.label/source.
    label = serializers.RegexField(  # type: ignore[assignment]
        r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64, required=False, allow_blank=True,
        help_text="Run on any free machine with this label.",
    )  # fmt: skip
    board = serializers.PrimaryKeyRelatedField(
        queryset=Board.objects.all(), required=False, allow_null=True
    )
    parameters = serializers.DictField(required=False)
    timeout = serializers.IntegerField(min_value=5, max_value=7 * 24 * 3600, required=False)
    priority = serializers.IntegerField(min_value=-100, max_value=100, required=False)
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=[RunSource.API, RunSource.UI, RunSource.JENKINS], required=False
    )


class RunOutput(serializers.ModelSerializer):
    case: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", read_only=True
    )
    case_version = serializers.IntegerField(source="case_version.number", read_only=True)
    machine: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", read_only=True
    )
    requested_machine: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", read_only=True
    )
    board = serializers.SerializerMethodField()
    requested_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    progress = serializers.SerializerMethodField()

    class Meta:
        model = TestRun
        fields = [
            "id", "uid", "case", "case_version", "requested_machine", "requested_label",
            "requested_board", "machine", "venv", "board", "requested_by", "source",
            "parameters", "priority", "timeout", "retry_of", "status", "outcome",
            "error_category", "status_message", "exit_code", "queued_at", "started_at",
            "finished_at", "planned", "passed", "failed", "errors", "skipped", "progress",
            "last_seq", "log_truncated", "cancel_requested", "pause_requested", "paused_at",
            "remote_workspace",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_board(self, run: TestRun) -> str | None:
        return str(run.board) if run.board_id else None

    @extend_schema_field(serializers.DictField())
    def get_progress(self, run: TestRun) -> dict[str, Any]:
        return selectors.run_progress(planned=run.planned, done=run.done_tests)


class RunListOutput(serializers.Serializer):
    """A row of the runs list, from ``selectors.run_summaries_named``: what a history table
    shows. The detail (``RunOutput``) adds the parameters, the venv, the workspace, the retry
    link, the control flags and the event counters; the fields here are the same as there.
    """

    id = serializers.IntegerField()
    uid = serializers.UUIDField()
    case = serializers.CharField()
    case_version = serializers.IntegerField()
    requested_machine = serializers.CharField(allow_null=True)
    requested_label = serializers.CharField()
    machine = serializers.CharField(allow_null=True)
    board = serializers.CharField(allow_null=True)
    requested_by = serializers.CharField(allow_null=True)
    source = serializers.ChoiceField(choices=RunSource.choices)  # type: ignore[assignment]
    priority = serializers.IntegerField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    outcome = serializers.ChoiceField(choices=RunOutcome.choices, allow_blank=True)
    error_category = serializers.ChoiceField(choices=ErrorCategory.choices, allow_blank=True)
    status_message = serializers.CharField()
    exit_code = serializers.IntegerField(allow_null=True)
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    planned = serializers.IntegerField()
    passed = serializers.IntegerField()
    failed = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    skipped = serializers.IntegerField()
    progress = serializers.DictField()

    def to_representation(self, instance: Any) -> dict[str, Any]:
        """The fields above, written out: DRF's generic path (a lookup and a conversion call
        per field) costs about 0.3 ms a row, most of a 50-row page's time. Its result is the
        same (tests/unit/test_runner/test_runs_list.py compares them)."""
        row = instance
        when = self.fields["queued_at"].to_representation
        return {
            "id": row["id"],
            "uid": str(row["uid"]),
            "case": row["case"],
            "case_version": row["case_version"],
            "requested_machine": row["requested_machine"],
            "requested_label": row["requested_label"],
            "machine": row["machine"],
            "board": row["board"],
            "requested_by": row["requested_by"],
            "source": row["source"],
            "priority": row["priority"],
            "status": row["status"],
            "outcome": row["outcome"],
            "error_category": row["error_category"],
            "status_message": row["status_message"],
            "exit_code": row["exit_code"],
            "queued_at": when(row["queued_at"]),
            "started_at": when(row["started_at"]) if row["started_at"] else None,
            "finished_at": when(row["finished_at"]) if row["finished_at"] else None,
            "planned": row["planned"],
            "passed": row["passed"],
            "failed": row["failed"],
            "errors": row["errors"],
            "skipped": row["skipped"],
            "progress": row["progress"],
        }


class EventOutput(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["seq", "ts", "type", "data"]
        read_only_fields = fields


class EventsPageOutput(serializers.Serializer):
    """A page of a run's events, with where the run stands, to poll from ``last_seq``."""

    run = serializers.IntegerField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    last_seq = serializers.IntegerField()
    events = EventOutput(many=True)


class ResultOutput(serializers.ModelSerializer):
    class Meta:
        model = TestResult
        fields = [
            "order", "test_id", "name", "file", "outcome", "duration", "message", "assertions",
            "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class ArtifactOutput(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = RunArtifact
        fields = ["name", "size", "created_at", "url"]
        read_only_fields = fields

    def get_url(self, artifact: RunArtifact) -> str:
        return f"/api/v1/runs/{artifact.run_id}/artifacts/{artifact.name}"


class MessageOutput(serializers.Serializer):
    message = serializers.CharField()
