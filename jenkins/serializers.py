"""Input and output shapes of the Jenkins and token APIs. Secrets are write-only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jenkins.models import (
    JOB_NAME_VALIDATOR,
    ApiToken,
    JenkinsBuild,
    JenkinsJob,
    JenkinsServer,
    RunCallback,
)
from jenkins.services.builds import console_marker


def _enum_field(values: list[str]) -> type[serializers.CharField]:
    # Values listed in the description, not as an enum: the schema names enums by field name
    # across all apps, and several apps have a "status" with a different set of values.
    listed = " | ".join(repr(v) for v in values)

    @extend_schema_field({"type": "string", "description": f"One of: {listed}."})
    class EnumField(serializers.CharField):
        pass

    return EnumField


BuildStatusField = _enum_field([str(v) for v in JenkinsBuild.Status.values])
BuildResultField = _enum_field(["", *(str(v) for v in JenkinsBuild.Result.values)])
OutcomeField = _enum_field(["passed", "failed", "skipped"])

NAME_FIELD = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)


class ServerOutput(serializers.ModelSerializer):
    has_api_token = serializers.SerializerMethodField()

    class Meta:
        model = JenkinsServer
        fields = [
            "id", "name", "url", "username", "has_api_token", "verify_tls", "connect_timeout",
            "read_timeout", "give_up_after_hours", "enabled", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_has_api_token(self, server: JenkinsServer) -> bool:
        return bool(server.api_token)


class ServerInput(serializers.Serializer):
    name = NAME_FIELD
    url = serializers.URLField(max_length=500)
    username = serializers.CharField(max_length=150, required=False, allow_blank=True)
    api_token = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=True,
        style={"input_type": "password"},
        help_text="Write-only. On update: leave out (or null) to keep, \"\" to clear.",
    )  # fmt: skip
    verify_tls = serializers.BooleanField(required=False)
    connect_timeout = serializers.IntegerField(min_value=1, max_value=120, required=False)
    read_timeout = serializers.IntegerField(min_value=1, max_value=600, required=False)
    give_up_after_hours = serializers.IntegerField(min_value=1, max_value=24 * 14, required=False)
    enabled = serializers.BooleanField(required=False)


class ServerUpdateInput(ServerInput):
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100, required=False)
    url = serializers.URLField(max_length=500, required=False)
    api_token = serializers.CharField(
        write_only=True, required=False, allow_blank=True, allow_null=True, trim_whitespace=True,
        style={"input_type": "password"},
    )  # fmt: skip


class ServerCheckOutput(serializers.Serializer):
    ok = serializers.BooleanField()
    version = serializers.CharField()
    message = serializers.CharField()


class JobOutput(serializers.ModelSerializer):
    server_name = serializers.CharField(source="server.name", read_only=True)

    class Meta:
        model = JenkinsJob
        fields = [
            "id", "server", "server_name", "full_name", "description", "parameter_defaults",
            "enabled", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


def _parameters_field(**kwargs: Any) -> serializers.DictField:
    return serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=10_000), **kwargs
    )


class JobInput(serializers.Serializer):
    server = serializers.PrimaryKeyRelatedField(queryset=JenkinsServer.objects.all())
    full_name = serializers.CharField(max_length=500, validators=[JOB_NAME_VALIDATOR])
    description = serializers.CharField(required=False, allow_blank=True)
    parameter_defaults = _parameters_field(required=False)
    enabled = serializers.BooleanField(required=False)


class JobUpdateInput(serializers.Serializer):
    full_name = serializers.CharField(
        max_length=500, validators=[JOB_NAME_VALIDATOR], required=False
    )
    description = serializers.CharField(required=False, allow_blank=True)
    parameter_defaults = _parameters_field(required=False)
    enabled = serializers.BooleanField(required=False)


class TestReportSummary(serializers.Serializer):
    passed = serializers.IntegerField()
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    duration = serializers.FloatField()
    total_cases = serializers.IntegerField()


class BuildOutput(serializers.ModelSerializer):
    job_name = serializers.CharField(source="job.full_name", read_only=True)
    server_name = serializers.CharField(source="job.server.name", read_only=True)
    triggered_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    # Not a URLField: empty until Jenkins has started the build (a "uri" it would not be).
    url = serializers.CharField(
        read_only=True, help_text="The build's page on Jenkins, once known."
    )
    tests = serializers.SerializerMethodField()
    status = BuildStatusField(read_only=True)
    result = BuildResultField(read_only=True)

    class Meta:
        model = JenkinsBuild
        fields = [
            "id", "job", "job_name", "server_name", "trigger_id", "parameters", "queue_id",
            "number", "url", "status", "result", "status_message", "tests", "triggered_by",
            "run", "cancel_requested_at", "created_at", "started_at", "finished_at",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(TestReportSummary(allow_null=True))
    def get_tests(self, build: JenkinsBuild) -> dict[str, Any] | None:
        report = build.test_report
        if not report:
            return None
        keys = ("passed", "failed", "skipped", "duration", "total_cases")
        return {k: report.get(k) for k in keys}


class TestCaseOutput(serializers.Serializer):
    suite = serializers.CharField()
    class_name = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField(help_text="Jenkins' status: PASSED, FIXED, FAILED, ...")
    outcome = OutcomeField()
    duration = serializers.FloatField()
    error_details = serializers.CharField(allow_null=True)
    error_stack_trace = serializers.CharField(allow_null=True)
    stdout = serializers.CharField(allow_null=True)
    stderr = serializers.CharField(allow_null=True)


class TestReportOutput(TestReportSummary):
    cases_truncated = serializers.BooleanField()
    cases = TestCaseOutput(many=True)


class BuildDetailOutput(BuildOutput):
    console_text = serializers.SerializerMethodField()
    console_length = serializers.IntegerField(read_only=True)
    console_complete = serializers.BooleanField(read_only=True)
    test_report = serializers.SerializerMethodField()

    class Meta(BuildOutput.Meta):
        fields = [
            *BuildOutput.Meta.fields, "console_text", "console_length", "console_complete",
            "test_report",
        ]  # fmt: skip
        read_only_fields = fields

    def get_console_text(self, build: JenkinsBuild) -> str:
        return console_marker(build) + build.console_text

    @extend_schema_field(TestReportOutput(allow_null=True))
    def get_test_report(self, build: JenkinsBuild) -> dict[str, Any] | None:
        return build.test_report


class BuildTriggerInput(serializers.Serializer):
    job = serializers.PrimaryKeyRelatedField(queryset=JenkinsJob.objects.all())
    parameters = _parameters_field(required=False, default=dict)
    run = serializers.IntegerField(
        required=False, allow_null=True, min_value=1,
        help_text="A test run (one you may see) this build belongs to.",
    )  # fmt: skip


class ConsoleQuery(serializers.Serializer):
    offset = serializers.IntegerField(min_value=0, required=False, default=0)


class ConsoleOutput(serializers.Serializer):
    offset = serializers.IntegerField(help_text="Where ``text`` starts.")
    next_offset = serializers.IntegerField(help_text="Ask from here next time.")
    text = serializers.CharField()
    truncated = serializers.BooleanField(
        help_text="True when the log before ``offset`` asked for is no longer kept."
    )
    complete = serializers.BooleanField(help_text="No more text will come.")
    status = BuildStatusField()
    result = BuildResultField(allow_blank=True)


class TokenOutput(serializers.ModelSerializer):
    user: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    active = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = [
            "id", "user", "name", "prefix", "created_at", "last_used_at", "expires_at",
            "revoked_at", "active",
        ]  # fmt: skip
        read_only_fields = fields

    def get_active(self, token: ApiToken) -> bool:
        from django.utils import timezone

        expired = token.expires_at is not None and token.expires_at <= timezone.now()
        return token.revoked_at is None and not expired


class TokenCreatedOutput(TokenOutput):
    token = serializers.CharField(
        read_only=True, help_text="The secret. Shown only in this response: store it now."
    )

    class Meta(TokenOutput.Meta):
        fields = [*TokenOutput.Meta.fields, "token"]
        read_only_fields = fields


class TokenInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


CallbackStateField = _enum_field([str(v) for v in RunCallback.State.values])


class RunCallbackInput(serializers.Serializer):
    url = serializers.CharField(
        max_length=2000,
        help_text="http(s) URL on a host listed in RUN_CALLBACK_ALLOWED_HOSTS; POSTed to (JSON) "
        "when the run finishes.",
    )


class RunCallbackOutput(serializers.ModelSerializer):
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    state = CallbackStateField(read_only=True)

    class Meta:
        model = RunCallback
        fields = [
            "id", "run", "url", "state", "attempts", "last_status_code", "last_error",
            "next_attempt_at", "last_attempt_at", "delivered_at", "created_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields
