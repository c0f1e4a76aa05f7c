"""Input and output shapes of the machines API. Secrets are write-only: no output has them."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from machines.models import AuditEntry, Board, Machine, Venv

LABELS = serializers.ListField(
    child=serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64),
    required=False,
    max_length=50,
)


class HostKeyOutput(serializers.Serializer):
    key_type = serializers.CharField()
    fingerprint = serializers.CharField()
    trusted_by = serializers.CharField(allow_null=True)
    trusted_at = serializers.DateTimeField(allow_null=True)


class MachineOutput(serializers.ModelSerializer):
    labels: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True
    )
    host_key = serializers.SerializerMethodField()
    has_password = serializers.SerializerMethodField()
    has_private_key = serializers.SerializerMethodField()
    effective_work_dir = serializers.CharField(read_only=True)

    class Meta:
        model = Machine
        fields = [
            "id", "name", "description", "connector", "hostname", "port", "os", "username",
            "labels", "work_dir", "effective_work_dir", "python", "max_concurrent_runs", "enabled",
            "maintenance", "maintenance_reason", "status", "last_checked_at", "last_seen_at",
            "last_error", "facts", "host_key", "has_password", "has_private_key",
            "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(HostKeyOutput(allow_null=True))
    def get_host_key(self, machine: Machine) -> dict[str, Any] | None:
        if not machine.host_key_pinned:
            return None
        return {
            "key_type": machine.host_key_type,
            "fingerprint": machine.host_key_fingerprint,
            "trusted_by": machine.host_key_trusted_by.get_username()
            if machine.host_key_trusted_by
            else None,
            "trusted_at": machine.host_key_trusted_at,
        }

    # Whether a secret is set is not itself secret; the value never leaves the server.
    def _credential_has(self, machine: Machine, column: str) -> bool:
        known = getattr(machine, "credential_flags", None)
        if known is not None:
            return bool(known.get(column))
        from machines.models import MachineCredential

        return MachineCredential.objects.filter(
            machine=machine, **{f"{column}__isnull": False}
        ).exists()

    def get_has_password(self, machine: Machine) -> bool:
        return self._credential_has(machine, "password")

    def get_has_private_key(self, machine: Machine) -> bool:
        return self._credential_has(machine, "private_key")


class MachineInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True)
    hostname = serializers.CharField(max_length=255)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False)
    os = serializers.ChoiceField(choices=Machine.Os.choices, required=False)
    connector = serializers.ChoiceField(choices=Machine.Connector.choices, required=False)
    username = serializers.CharField(max_length=64)
    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False,
        style={"input_type": "password"},
    )  # fmt: skip
    private_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False
    )
    passphrase = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False,
        style={"input_type": "password"},
    )  # fmt: skip
    labels = LABELS
    work_dir = serializers.CharField(max_length=255, required=False, allow_blank=True)
    python = serializers.CharField(max_length=255, required=False)
    max_concurrent_runs = serializers.IntegerField(min_value=1, max_value=64, required=False)
    enabled = serializers.BooleanField(required=False)
    users = serializers.SlugRelatedField(
        slug_field="username", queryset=get_user_model().objects.all(), many=True, required=False
    )
    groups = serializers.SlugRelatedField(
        slug_field="name", queryset=Group.objects.all(), many=True, required=False
    )


class MachineUpdateInput(MachineInput):
    """Every field optional. A secret left out (or null) is kept; an empty string clears it."""

    name = serializers.CharField(max_length=100, required=False)
    hostname = serializers.CharField(max_length=255, required=False)
    username = serializers.CharField(max_length=64, required=False)


class FingerprintInput(serializers.Serializer):
    fingerprint = serializers.RegexField(r"^SHA256:[A-Za-z0-9+/]{43}$", max_length=60)


class OfferedHostKeyOutput(serializers.Serializer):
    key_type = serializers.CharField()
    fingerprint = serializers.CharField()
    pinned_fingerprint = serializers.CharField(allow_blank=True)
    matches_pinned = serializers.BooleanField()


class MaintenanceInput(serializers.Serializer):
    on = serializers.BooleanField()
    reason = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")


class PoolInput(serializers.Serializer):
    size = serializers.IntegerField(min_value=1, max_value=64)
    python = serializers.CharField(max_length=255, required=False)


class CheckOutput(serializers.Serializer):
    ok = serializers.BooleanField()
    status = serializers.CharField()
    message = serializers.CharField()
    warnings = serializers.ListField(child=serializers.CharField())
    facts = serializers.DictField()


class MessageOutput(serializers.Serializer):
    message = serializers.CharField()


class BoardOutput(serializers.ModelSerializer):
    machine_name = serializers.CharField(source="machine.name", read_only=True)
    labels: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True
    )
    locked_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = Board
        fields = [
            "id", "machine", "machine_name", "name", "description", "serial_port", "baud_rate",
            "data_bits", "parity", "stop_bits", "flow_control", "labels", "status",
            "lease_holder", "leased_at", "lease_expires_at", "locked", "locked_reason",
            "locked_by", "locked_at", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class BoardInput(serializers.Serializer):
    machine = serializers.PrimaryKeyRelatedField(queryset=Machine.objects.all())
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True)
    serial_port = serializers.CharField(max_length=255)
    baud_rate = serializers.IntegerField(min_value=50, max_value=12_000_000, required=False)
    data_bits = serializers.IntegerField(min_value=5, max_value=8, required=False)
    parity = serializers.ChoiceField(choices=Board.Parity.choices, required=False)
    stop_bits = serializers.ChoiceField(choices=Board.StopBits.choices, required=False)
    flow_control = serializers.ChoiceField(choices=Board.FlowControl.choices, required=False)
    labels = LABELS


class BoardUpdateInput(BoardInput):
    # A board does not move between machines; delete it and create it on the other one.
    machine = None  # type: ignore[assignment]
    name = serializers.CharField(max_length=100, required=False)
    serial_port = serializers.CharField(max_length=255, required=False)


class LockInput(serializers.Serializer):
    locked = serializers.BooleanField()
    reason = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")


class VenvOutput(serializers.ModelSerializer):
    machine_name = serializers.CharField(source="machine.name", read_only=True)

    class Meta:
        model = Venv
        fields = [
            "id", "machine", "machine_name", "slot", "path", "python", "python_version",
            "requirements_hash", "state", "lease_holder", "leased_at", "lease_expires_at",
            "last_used_at", "last_output", "last_error", "failure_count", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class AuditEntryOutput(serializers.ModelSerializer):
    actor: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = AuditEntry
        fields = [
            "id", "at", "actor", "source", "action", "target_type", "target_id", "target_repr",
            "changes",
        ]  # fmt: skip
        read_only_fields = fields
