"""Admin pages for lab admins. Every change goes through the services (and so the audit log);
secrets are write-only: the forms never render a stored value."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from machines import services, ssh
from machines.models import AuditEntry, Board, Machine, Venv

SOURCE = "admin"
CREDENTIAL_FIELDS: tuple[str, ...] = (
    "password", "clear_password", "private_key", "clear_private_key", "passphrase",
    "clear_passphrase",
)  # fmt: skip
HOST_KEY_FIELDS: tuple[str, ...] = (
    "host_key_type", "host_key_fingerprint", "host_key_trusted_by", "host_key_trusted_at"
)  # fmt: skip
STATE_FIELDS: tuple[str, ...] = (
    "status", "last_checked_at", "last_seen_at", "last_error", "facts", "maintenance",
    "maintenance_reason", "created_at", "updated_at",
)  # fmt: skip
KEEP = "Leave blank to keep the stored value. It is never shown again."


class MachineAdminForm(forms.ModelForm):
    password = forms.CharField(
        required=False, strip=False, widget=forms.PasswordInput(render_value=False), help_text=KEEP
    )
    clear_password = forms.BooleanField(required=False, label="Remove the stored password")
    private_key = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off"}),
        help_text="OpenSSH or PEM private key text. " + KEEP,
    )
    clear_private_key = forms.BooleanField(required=False, label="Remove the stored private key")
    passphrase = forms.CharField(
        required=False, strip=False, widget=forms.PasswordInput(render_value=False), help_text=KEEP
    )
    clear_passphrase = forms.BooleanField(required=False, label="Remove the stored passphrase")

    class Meta:
        model = Machine
        fields = [
            "name", "description", "connector", "hostname", "port", "os", "username", "labels",
            "work_dir", "python", "max_concurrent_runs", "enabled", "users", "groups",
        ]  # fmt: skip

    def secret_changes(self) -> dict[str, str | None]:
        """password/private_key/passphrase -> new value, "" to clear; absent to keep."""
        changes: dict[str, str | None] = {}
        for name in ("password", "private_key", "passphrase"):
            if self.cleaned_data.get(f"clear_{name}"):
                changes[name] = ""
            elif self.cleaned_data.get(name):
                changes[name] = self.cleaned_data[name]
        return changes


@admin.register(Machine)
class MachineAdmin(admin.ModelAdmin):
    form = MachineAdminForm
    list_display = [
        "name", "address", "os", "status", "enabled", "maintenance", "host_key_fingerprint",
        "last_checked_at",
    ]  # fmt: skip
    list_filter = ["status", "os", "enabled", "maintenance", "labels"]
    search_fields = ["name", "hostname", "description"]
    filter_horizontal = ["labels", "users", "groups"]
    readonly_fields = [
        "status", "last_checked_at", "last_seen_at", "last_error", "facts", "maintenance",
        "maintenance_reason", "host_key_type", "host_key_fingerprint", "host_key_trusted_by",
        "host_key_trusted_at", "created_at", "updated_at",
    ]  # fmt: skip
    fieldsets = [
        (None, {"fields": ["name", "description", "labels", "enabled"]}),
        ("Connection", {"fields": ["connector", "hostname", "port", "os", "username"]}),
        ("Credentials (write-only, encrypted at rest)", {"fields": CREDENTIAL_FIELDS}),
        ("Execution", {"fields": ["work_dir", "python", "max_concurrent_runs"]}),
        ("Access", {"fields": ["users", "groups"]}),
        ("Host key (pinned by the 'trust host key' action)", {"fields": HOST_KEY_FIELDS}),
        ("State", {"fields": STATE_FIELDS}),
    ]
    actions = [
        "check_connection", "trust_host_key", "provision_pool", "maintenance_on",
        "maintenance_off",
    ]  # fmt: skip

    def save_model(
        self, request: HttpRequest, obj: Machine, form: MachineAdminForm, change: bool
    ) -> None:
        data = form.cleaned_data
        common: dict[str, Any] = {
            name: data[name]
            for name in services.machines.PLAIN_FIELDS
            if name in data and name in form.fields
        }
        labels = [label.name for label in data.get("labels", [])]
        if change:
            services.machine_update(
                machine=obj, actor=request.user, source=SOURCE, labels=labels,
                users=list(data.get("users", [])), groups=list(data.get("groups", [])),
                **{k: v for k, v in common.items() if k in form.changed_data},
                **form.secret_changes(),
            )  # fmt: skip
        else:
            secrets: dict[str, Any] = {k: v or None for k, v in form.secret_changes().items()}
            machine = services.machine_create(
                actor=request.user, source=SOURCE, labels=labels,
                users=list(data.get("users", [])), groups=list(data.get("groups", [])),
                **common, **secrets,
            )  # fmt: skip
            obj.pk = obj.id = machine.pk

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Labels, users and groups were set by the service (with an audit entry).
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request: HttpRequest, obj: Machine) -> None:
        services.machine_delete(machine=obj, actor=request.user, source=SOURCE)

    @admin.action(description="Check connection (and read facts)")
    def check_connection(self, request: HttpRequest, queryset: QuerySet[Machine]) -> None:
        for machine in queryset:
            result = services.machine_check(machine=machine, actor=request.user, source=SOURCE)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{machine.name}: {result.status}. {result.message}", level)
            for warning in result.warnings:
                self.message_user(request, f"{machine.name}: {warning}", messages.WARNING)

    @admin.action(description="Trust host key (shows the fingerprint first)")
    def trust_host_key(
        self, request: HttpRequest, queryset: QuerySet[Machine]
    ) -> HttpResponse | None:
        if request.POST.get("confirm") == "yes":
            for machine in queryset:
                fingerprint = request.POST.get(f"fingerprint_{machine.pk}", "")
                if not fingerprint:
                    continue
                try:
                    services.machine_trust_host_key(
                        machine=machine, actor=request.user, source=SOURCE, fingerprint=fingerprint
                    )
                except ssh.SSHError as exc:
                    self.message_user(request, f"{machine.name}: {exc.message}", messages.ERROR)
                except services.machines.ConflictError as exc:
                    self.message_user(request, f"{machine.name}: {exc.message}", messages.ERROR)
                else:
                    self.message_user(
                        request,
                        f"{machine.name}: trusted host key {fingerprint}.",
                        messages.SUCCESS,
                    )
            return None
        offers = []
        for machine in queryset:
            try:
                offered = services.machine_fetch_host_key(machine=machine)
                offers.append({"machine": machine, "offered": offered, "error": ""})
            except ssh.SSHError as exc:
                offers.append({"machine": machine, "offered": None, "error": exc.message})
        return TemplateResponse(
            request,
            "admin/machines/machine/trust_host_key.html",
            {
                **self.admin_site.each_context(request),
                "title": "Trust host keys",
                "offers": offers,
                "queryset": queryset,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Provision venv pool (one slot per concurrent run)")
    def provision_pool(self, request: HttpRequest, queryset: QuerySet[Machine]) -> None:
        for machine in queryset:
            services.venv_pool_request(
                machine=machine, size=machine.max_concurrent_runs, actor=request.user,
                source=SOURCE,
            )  # fmt: skip
        self.message_user(request, f"Provisioning queued for {queryset.count()} machine(s).")

    @admin.action(description="Maintenance on")
    def maintenance_on(self, request: HttpRequest, queryset: QuerySet[Machine]) -> None:
        for machine in queryset:
            services.machine_set_maintenance(
                machine=machine, actor=request.user, source=SOURCE, on=True,
                reason=f"set by {request.user.get_username()} in admin",
            )  # fmt: skip
        self.message_user(request, f"{queryset.count()} machine(s) in maintenance.")

    @admin.action(description="Maintenance off")
    def maintenance_off(self, request: HttpRequest, queryset: QuerySet[Machine]) -> None:
        for machine in queryset:
            services.machine_set_maintenance(
                machine=machine, actor=request.user, source=SOURCE, on=False
            )
        self.message_user(request, f"{queryset.count()} machine(s) back in service.")


@admin.register(Board)
class BoardAdmin(admin.ModelAdmin):
    list_display = [
        "name", "machine", "serial_port", "baud_rate", "status", "lease_holder", "locked",
    ]  # fmt: skip
    list_filter = ["machine", "status", "locked", "labels"]
    search_fields = ["name", "serial_port", "machine__name"]
    filter_horizontal = ["labels"]
    readonly_fields = [
        "status", "lease_holder", "leased_at", "lease_expires_at", "locked", "locked_reason",
        "locked_by", "locked_at", "created_at", "updated_at",
    ]  # fmt: skip
    actions = ["lock", "unlock"]

    def save_model(self, request: HttpRequest, obj: Board, form: Any, change: bool) -> None:
        data = form.cleaned_data
        fields = {k: data[k] for k in services.boards.BOARD_FIELDS if k in data}
        labels = [label.name for label in data.get("labels", [])]
        if change:
            services.board_update(
                board=obj, actor=request.user, source=SOURCE, labels=labels,
                **{k: v for k, v in fields.items() if k in form.changed_data},
            )  # fmt: skip
        else:
            board = services.board_create(
                machine=data["machine"], actor=request.user, source=SOURCE, labels=labels, **fields
            )
            obj.pk = obj.id = board.pk

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    @admin.action(description="Lock for maintenance")
    def lock(self, request: HttpRequest, queryset: QuerySet[Board]) -> None:
        for board in queryset:
            services.board_set_locked(
                board=board, actor=request.user, source=SOURCE, locked=True,
                reason=f"locked by {request.user.get_username()} in admin",
            )  # fmt: skip

    @admin.action(description="Unlock")
    def unlock(self, request: HttpRequest, queryset: QuerySet[Board]) -> None:
        for board in queryset:
            services.board_set_locked(board=board, actor=request.user, source=SOURCE, locked=False)


@admin.register(Venv)
class VenvAdmin(admin.ModelAdmin):
    list_display = ["__str__", "state", "python_version", "lease_holder", "failure_count",
                    "last_used_at"]  # fmt: skip
    list_filter = ["state", "machine"]
    readonly_fields = [f.name for f in Venv._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # slots are made by provisioning a pool


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "source", "action", "target_type", "target_repr"]
    list_filter = ["action", "source", "target_type"]
    search_fields = ["target_repr", "action"]
    readonly_fields = [f.name for f in AuditEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
