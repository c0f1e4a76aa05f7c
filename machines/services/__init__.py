"""Every write that matters on machines, credentials, boards and venv pools goes through here."""

from machines.services.audit import audit_record
from machines.services.boards import (
    board_create,
    board_lease,
    board_release,
    board_renew,
    board_set_locked,
    board_update,
)
from machines.services.machines import (
    MachineCheckResult,
    machine_check,
    machine_connection,
    machine_create,
    machine_delete,
    machine_fetch_host_key,
    machine_set_maintenance,
    machine_trust_host_key,
    machine_update,
)
from machines.services.pool import (
    leases_expire,
    venv_lease,
    venv_pool_ensure,
    venv_provision,
    venv_release,
    venv_renew,
    venv_reset,
    venv_sync_requirements,
)

__all__ = [
    "MachineCheckResult",
    "audit_record",
    "board_create",
    "board_lease",
    "board_release",
    "board_renew",
    "board_set_locked",
    "board_update",
    "leases_expire",
    "machine_check",
    "machine_connection",
    "machine_create",
    "machine_delete",
    "machine_fetch_host_key",
    "machine_set_maintenance",
    "machine_trust_host_key",
    "machine_update",
    "venv_lease",
    "venv_pool_ensure",
    "venv_provision",
    "venv_release",
    "venv_renew",
    "venv_reset",
    "venv_sync_requirements",
]
