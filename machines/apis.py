"""Thin API views: validate, call one service, serialize. Reads are filtered by who asks."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, status
from rest_framework.request import Request
from rest_framework.response import Response

from machines import selectors, services
from machines.filters import AuditFilter, BoardFilter, MachineFilter, VenvFilter
from machines.models import AuditEntry, Board, Machine, MachineCredential, Venv
from machines.serializers import (
    AuditEntryOutput,
    BoardInput,
    BoardOutput,
    BoardUpdateInput,
    CheckOutput,
    FingerprintInput,
    LockInput,
    MachineInput,
    MachineOutput,
    MachineUpdateInput,
    MaintenanceInput,
    MessageOutput,
    OfferedHostKeyOutput,
    PoolInput,
    VenvOutput,
)

SOURCE = "api"


class IsAdminOrReadOnly(permissions.BasePermission):
    """Anyone signed in reads (what they may see); only admins change anything."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or bool(request.user.is_staff)


class MachineQuerysetMixin(generics.GenericAPIView):
    def get_queryset(self) -> QuerySet[Machine]:
        qs = selectors.machine_list(user=self.request.user).select_related("host_key_trusted_by")
        credentials = MachineCredential.objects.filter(machine=OuterRef("pk"))
        return qs.annotate(
            _has_password=Exists(credentials.filter(password__isnull=False)),
            _has_private_key=Exists(credentials.filter(private_key__isnull=False)),
        )


def _with_flags(machine: Machine) -> Machine:
    # Lets the serializer answer has_password / has_private_key without a query per row.
    machine.credential_flags = {  # type: ignore[attr-defined]
        "password": getattr(machine, "_has_password", None),
        "private_key": getattr(machine, "_has_private_key", None),
    }
    if None in machine.credential_flags.values():  # type: ignore[attr-defined]
        del machine.credential_flags  # type: ignore[attr-defined]
    return machine


class MachineOutputWithFlags(MachineOutput):
    def to_representation(self, instance: Machine) -> dict[str, Any]:
        return super().to_representation(_with_flags(instance))


class MachineListApi(MachineQuerysetMixin, generics.ListAPIView):
    """Machines you may use (admins: all). Admins create machines here."""

    permission_classes = [IsAdminOrReadOnly]
    serializer_class = MachineOutputWithFlags
    filterset_class = MachineFilter
    search_fields = ["name", "hostname", "description"]
    ordering_fields = ["name", "status", "last_checked_at", "created_at"]

    @extend_schema(request=MachineInput, responses={201: MachineOutput})
    def post(self, request: Request) -> Response:
        data = MachineInput(data=request.data)
        data.is_valid(raise_exception=True)
        machine = services.machine_create(actor=request.user, source=SOURCE, **data.validated_data)
        machine = self.get_queryset().get(pk=machine.pk)
        return Response(MachineOutputWithFlags(machine).data, status=status.HTTP_201_CREATED)


class MachineDetailApi(MachineQuerysetMixin, generics.RetrieveAPIView):
    permission_classes = [IsAdminOrReadOnly]
    serializer_class = MachineOutputWithFlags

    @extend_schema(request=MachineUpdateInput, responses=MachineOutput)
    def patch(self, request: Request, pk: int) -> Response:
        machine = self.get_object()
        data = MachineUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.machine_update(
            machine=machine, actor=request.user, source=SOURCE, **data.validated_data
        )
        return Response(MachineOutputWithFlags(self.get_queryset().get(pk=pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.machine_delete(machine=self.get_object(), actor=request.user, source=SOURCE)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _MachineActionApi(MachineQuerysetMixin, generics.GenericAPIView):
    permission_classes = [permissions.IsAdminUser]
    serializer_class = MessageOutput


class MachineCheckApi(_MachineActionApi):
    @extend_schema(request=None, responses=CheckOutput)
    def post(self, request: Request, pk: int) -> Response:
        result = services.machine_check(
            machine=self.get_object(), actor=request.user, source=SOURCE
        )
        return Response(CheckOutput(result).data)


class MachineHostKeyApi(_MachineActionApi):
    """The host key the machine offers right now, to compare before trusting it."""

    upstream_statuses = (502,)  # the machine cannot be reached: documented in the schema

    @extend_schema(responses=OfferedHostKeyOutput)
    def get(self, request: Request, pk: int) -> Response:
        machine = self.get_object()
        offered = services.machine_fetch_host_key(machine=machine)
        return Response(
            OfferedHostKeyOutput(
                {
                    "key_type": offered.key_type,
                    "fingerprint": offered.fingerprint,
                    "pinned_fingerprint": machine.host_key_fingerprint,
                    "matches_pinned": offered.fingerprint == machine.host_key_fingerprint,
                }
            ).data
        )


class MachineTrustHostKeyApi(_MachineActionApi):
    upstream_statuses = (502,)  # the machine cannot be reached: documented in the schema

    @extend_schema(request=FingerprintInput, responses=MachineOutput)
    def post(self, request: Request, pk: int) -> Response:
        data = FingerprintInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.machine_trust_host_key(
            machine=self.get_object(), actor=request.user, source=SOURCE,
            fingerprint=data.validated_data["fingerprint"],
        )  # fmt: skip
        return Response(MachineOutputWithFlags(self.get_queryset().get(pk=pk)).data)


class MachineMaintenanceApi(_MachineActionApi):
    @extend_schema(request=MaintenanceInput, responses=MachineOutput)
    def post(self, request: Request, pk: int) -> Response:
        data = MaintenanceInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.machine_set_maintenance(
            machine=self.get_object(), actor=request.user, source=SOURCE, **data.validated_data
        )
        return Response(MachineOutputWithFlags(self.get_queryset().get(pk=pk)).data)


class MachinePoolApi(_MachineActionApi):
    """Queues provisioning of the machine's venv pool; watch /venvs/?machine=<id>."""

    @extend_schema(request=PoolInput, responses={202: MessageOutput})
    def post(self, request: Request, pk: int) -> Response:
        machine = self.get_object()
        data = PoolInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.venv_pool_request(
            machine=machine, actor=request.user, source=SOURCE, **data.validated_data
        )
        return Response(
            {"message": f"Provisioning {data.validated_data['size']} venv(s) on {machine.name}."},
            status=status.HTTP_202_ACCEPTED,
        )


class BoardListApi(generics.ListAPIView):
    permission_classes = [IsAdminOrReadOnly]
    serializer_class = BoardOutput
    filterset_class = BoardFilter
    search_fields = ["name", "serial_port", "description", "machine__name"]
    ordering_fields = ["name", "machine__name", "status"]

    def get_queryset(self) -> QuerySet[Board]:
        return selectors.board_list(user=self.request.user)

    @extend_schema(request=BoardInput, responses={201: BoardOutput})
    def post(self, request: Request) -> Response:
        data = BoardInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        board = services.board_create(
            machine=fields.pop("machine"), actor=request.user, source=SOURCE, **fields
        )
        return Response(BoardOutput(board).data, status=status.HTTP_201_CREATED)


class BoardDetailApi(generics.RetrieveAPIView):
    permission_classes = [IsAdminOrReadOnly]
    serializer_class = BoardOutput

    def get_queryset(self) -> QuerySet[Board]:
        return selectors.board_list(user=self.request.user)

    @extend_schema(request=BoardUpdateInput, responses=BoardOutput)
    def patch(self, request: Request, pk: int) -> Response:
        data = BoardUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        board = services.board_update(
            board=self.get_object(), actor=request.user, source=SOURCE, **data.validated_data
        )
        return Response(BoardOutput(board).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.board_delete(board=self.get_object(), actor=request.user, source=SOURCE)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BoardLockApi(generics.GenericAPIView):
    """Locks a board for maintenance (no new run gets it) or unlocks it."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = BoardOutput

    def get_queryset(self) -> QuerySet[Board]:
        return selectors.board_list(user=self.request.user)

    @extend_schema(request=LockInput, responses=BoardOutput)
    def post(self, request: Request, pk: int) -> Response:
        data = LockInput(data=request.data)
        data.is_valid(raise_exception=True)
        board = services.board_set_locked(
            board=self.get_object(), actor=request.user, source=SOURCE, **data.validated_data
        )
        return Response(BoardOutput(board).data)


class VenvListApi(generics.ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = VenvOutput
    filterset_class = VenvFilter
    ordering_fields = ["machine__name", "slot", "state", "last_used_at"]

    def get_queryset(self) -> QuerySet[Venv]:
        return selectors.venv_list(user=self.request.user)


class VenvDetailApi(generics.RetrieveAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = VenvOutput

    def get_queryset(self) -> QuerySet[Venv]:
        return selectors.venv_list(user=self.request.user)


class VenvResetApi(generics.GenericAPIView):
    """Queues a reset (recreate clean) of a slot that is not leased."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = MessageOutput

    def get_queryset(self) -> QuerySet[Venv]:
        return selectors.venv_list(user=self.request.user)

    @extend_schema(request=None, responses={202: MessageOutput})
    def post(self, request: Request, pk: int) -> Response:
        venv = services.venv_reset_request(
            venv=self.get_object(), actor=request.user, source=SOURCE
        )
        return Response({"message": f"Resetting {venv}."}, status=status.HTTP_202_ACCEPTED)


class AuditListApi(generics.ListAPIView):
    """Who changed what on machines, boards, pools and credentials (admins only)."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = AuditEntryOutput
    filterset_class = AuditFilter
    ordering_fields = ["at"]

    def get_queryset(self) -> QuerySet[AuditEntry]:
        return selectors.audit_list(user=self.request.user)
