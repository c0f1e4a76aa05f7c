"""Admin pages for Jenkins servers, jobs, builds and API tokens. Changes go through the services
(and so the audit log); the Jenkins API token is write-only: the form never renders it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jenkins import services
from jenkins.client import JenkinsError
from jenkins.models import ApiToken, JenkinsBuild, JenkinsJob, JenkinsServer, RunCallback
from jenkins.services.builds import console_marker
from jenkins.services.servers import JOB_FIELDS, SERVER_FIELDS
from test_management_system.errors import ApplicationError

SOURCE = "admin"
KEEP = "Leave blank to keep the stored value. It is never shown again."


class JenkinsServerAdminForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    api_token = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="The Jenkins API token of the user above. " + KEEP,
    )
    clear_api_token = forms.BooleanField(required=False, label="Remove the stored API token")

    class Meta:
        model = JenkinsServer
        fields = list(SERVER_FIELDS)

    def token_change(self) -> dict[str, str]:
        if self.cleaned_data.get("clear_api_token"):
            return {"api_token": ""}
        if self.cleaned_data.get("api_token"):
            return {"api_token": self.cleaned_data["api_token"]}
        return {}


@admin.register(JenkinsServer)
class JenkinsServerAdmin(admin.ModelAdmin):
    form = JenkinsServerAdminForm
    list_display = ["name", "url", "username", "has_token", "verify_tls", "enabled"]
    search_fields = ["name", "url"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "url", "enabled"]}),
        ("Account (the API token is write-only, encrypted at rest)",
         {"fields": ["username", "api_token", "clear_api_token"]}),
        ("Connection", {"fields": ["verify_tls", "connect_timeout", "read_timeout",
                                   "give_up_after_hours"]}),
        ("State", {"fields": ["created_at", "updated_at"]}),
    ]  # fmt: skip
    actions = ["check_connection"]

    @admin.display(boolean=True, description="API token")
    def has_token(self, obj: JenkinsServer) -> bool:
        return bool(obj.api_token)

    def save_model(
        self, request: HttpRequest, obj: JenkinsServer, form: JenkinsServerAdminForm, change: bool
    ) -> None:
        data = {k: form.cleaned_data[k] for k in SERVER_FIELDS if k in form.cleaned_data}
        if change:
            services.jenkins_server_update(
                server=obj, actor=request.user, source=SOURCE,
                **{k: v for k, v in data.items() if k in form.changed_data},
                **form.token_change(),
            )  # fmt: skip
        else:
            server = services.jenkins_server_create(
                actor=request.user, source=SOURCE, api_token=form.cleaned_data.get("api_token"),
                **data,
            )  # fmt: skip
            obj.pk = obj.id = server.pk

    def delete_model(self, request: HttpRequest, obj: JenkinsServer) -> None:
        services.jenkins_server_delete(server=obj, actor=request.user, source=SOURCE)

    @admin.action(description="Check connection (reads the Jenkins version)")
    def check_connection(self, request: HttpRequest, queryset: QuerySet[JenkinsServer]) -> None:
        for server in queryset:
            result = services.jenkins_server_check(server=server)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{server.name}: {result.message}", level)


@admin.register(JenkinsJob)
class JenkinsJobAdmin(admin.ModelAdmin):
    list_display = ["full_name", "server", "enabled", "updated_at"]
    list_filter = ["server", "enabled"]
    search_fields = ["full_name", "description"]
    fields = ["server", *JOB_FIELDS]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["server"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: JenkinsJob, form: Any, change: bool) -> None:
        data = {k: form.cleaned_data[k] for k in JOB_FIELDS if k in form.cleaned_data}
        if change:
            services.jenkins_job_update(
                job=obj, actor=request.user, source=SOURCE,
                **{k: v for k, v in data.items() if k in form.changed_data},
            )  # fmt: skip
        else:
            job = services.jenkins_job_create(
                actor=request.user, source=SOURCE, server=form.cleaned_data["server"], **data
            )
            obj.pk = obj.id = job.pk

    def delete_model(self, request: HttpRequest, obj: JenkinsJob) -> None:
        services.jenkins_job_delete(job=obj, actor=request.user, source=SOURCE)


@admin.register(JenkinsBuild)
class JenkinsBuildAdmin(admin.ModelAdmin):
    list_display = [
        "__str__", "status", "result", "triggered_by", "created_at", "finished_at",
    ]  # fmt: skip
    list_filter = ["status", "result", "job__server"]
    search_fields = ["job__full_name", "trigger_id", "status_message"]
    exclude = ["console_text"]
    readonly_fields = [
        *(f.name for f in JenkinsBuild._meta.fields if f.name != "console_text"), "console",
    ]  # fmt: skip
    actions = ["cancel"]

    @admin.display(description="Console")
    def console(self, obj: JenkinsBuild) -> str:
        return console_marker(obj) + obj.console_text

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # builds are triggered through the API

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the record of what ran stays

    @admin.action(description="Cancel (dequeue or stop in Jenkins)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[JenkinsBuild]) -> None:
        for build in queryset:
            try:
                services.jenkins_build_cancel(build=build, actor=request.user, source=SOURCE)
            except (JenkinsError, ApplicationError) as exc:
                self.message_user(request, f"{build}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{build}: cancel requested.", messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at",
                    "revoked_at"]  # fmt: skip
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    # The hash is no secret, but there is nothing an admin could do with it.
    exclude = ["key_hash"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "expires_at",
                       "revoked_at"]  # fmt: skip
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # users make their own, through the API, and see the secret once

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the row records who had access and when

    @admin.action(description="Revoke")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            services.api_token_revoke(token=token, actor=request.user, source=SOURCE)
        self.message_user(request, f"{queryset.count()} token(s) revoked.")


@admin.register(RunCallback)
class RunCallbackAdmin(admin.ModelAdmin):
    """The delivery record of run-finished callbacks: read-only (they are made through the API
    and sent by the sweep)."""

    list_display = ["run", "url", "state", "attempts", "last_status_code", "delivered_at"]
    list_filter = ["state"]
    search_fields = ["url", "run__id"]
    readonly_fields = [
        "run", "url", "base_url", "created_by", "state", "attempts", "last_status_code",
        "last_error", "next_attempt_at", "last_attempt_at", "delivered_at", "created_at",
        "updated_at",
    ]  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
