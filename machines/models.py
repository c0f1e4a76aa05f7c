from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from machines.fields import SecretField

NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    "Use letters, digits, '.', '_' and '-', starting with a letter or digit.",
)


class Label(models.Model):
    """A tag on machines and boards ("linux", "stm32", "can-bus"); runs can ask for "any X"."""

    name = models.CharField(max_length=64, unique=True, validators=[NAME_VALIDATOR])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Machine(models.Model):
    class Os(models.TextChoices):
        LINUX = "linux", "Linux"
        WINDOWS = "windows", "Windows"

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Unknown"
        ONLINE = "online", "Online"
        OFFLINE = "offline", "Offline"

    class Connector(models.TextChoices):
        SSH = "ssh", "SSH"
        # The worker's own host, without SSH: first starts and single-host labs only.
        LOCAL = "local", "This host (no SSH)"

    name = models.CharField(max_length=100, unique=True, validators=[NAME_VALIDATOR])
    description = models.TextField(blank=True)
    connector = models.CharField(max_length=5, choices=Connector.choices, default=Connector.SSH)
    hostname = models.CharField(max_length=255)
    port = models.PositiveIntegerField(
        default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    os = models.CharField(max_length=10, choices=Os.choices, default=Os.LINUX)
    username = models.CharField(max_length=64)
    labels = models.ManyToManyField(Label, blank=True, related_name="machines")
    # Empty: <home>/tms-work, resolved from the facts of the last check.
    work_dir = models.CharField(max_length=255, blank=True)
    python = models.CharField(max_length=255, default="python3")
    max_concurrent_runs = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(64)]
    )
    enabled = models.BooleanField(default=True)
    maintenance = models.BooleanField(default=False)
    maintenance_reason = models.CharField(max_length=255, blank=True)

    # Pinned host key: set only by the explicit trust action.
    host_key_type = models.CharField(max_length=64, blank=True)
    host_key_base64 = models.TextField(blank=True)
    host_key_fingerprint = models.CharField(max_length=100, blank=True)
    host_key_trusted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    host_key_trusted_at = models.DateTimeField(null=True, blank=True)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UNKNOWN)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    facts = models.JSONField(default=dict, blank=True)

    # Who may see and use it (admins see everything).
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="assigned_machines"
    )
    groups = models.ManyToManyField("auth.Group", blank=True, related_name="assigned_machines")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(port__gte=1) & Q(port__lte=65535), name="machine_port_range"
            ),
            models.CheckConstraint(
                condition=Q(max_concurrent_runs__gte=1), name="machine_concurrency_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        return f"{self.username}@{self.hostname}:{self.port}"

    @property
    def is_usable(self) -> bool:
        return self.enabled and not self.maintenance

    @property
    def host_key_pinned(self) -> bool:
        return bool(self.host_key_base64)

    @property
    def effective_work_dir(self) -> str:
        if self.work_dir:
            return self.work_dir
        home = (self.facts or {}).get("home") or (
            f"C:\\Users\\{self.username}"
            if self.os == self.Os.WINDOWS
            else f"/home/{self.username}"
        )
        sep = "\\" if self.os == self.Os.WINDOWS else "/"
        return f"{home.rstrip(sep)}{sep}tms-work"


class MachineCredential(models.Model):
    """The secrets of a machine, apart from it so that listing machines never decrypts them.

    ``version`` goes up on every change, so cached SSH connections made with older secrets are
    dropped.
    """

    machine = models.OneToOneField(Machine, on_delete=models.CASCADE, related_name="credential")
    password = SecretField()
    private_key = SecretField()
    passphrase = SecretField()
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        kinds = [k for k in ("password", "private key") if getattr(self, k.replace(" ", "_"))]
        return f"credentials of {self.machine_id}: {', '.join(kinds) or 'none'}"


class Board(models.Model):
    class Parity(models.TextChoices):
        NONE = "N", "None"
        EVEN = "E", "Even"
        ODD = "O", "Odd"
        MARK = "M", "Mark"
        SPACE = "S", "Space"

    class StopBits(models.TextChoices):
        ONE = "1", "1"
        ONE_POINT_FIVE = "1.5", "1.5"
        TWO = "2", "2"

    class FlowControl(models.TextChoices):
        NONE = "none", "None"
        XONXOFF = "xonxoff", "XON/XOFF (software)"
        RTSCTS = "rtscts", "RTS/CTS (hardware)"
        DSRDTR = "dsrdtr", "DSR/DTR (hardware)"

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Unknown"
        ONLINE = "online", "Online"
        OFFLINE = "offline", "Offline"

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="boards")
    name = models.CharField(max_length=100, validators=[NAME_VALIDATOR])
    description = models.TextField(blank=True)
    # Prefer a stable path such as /dev/serial/by-id/usb-...; COM3 on Windows; any pyserial URL.
    serial_port = models.CharField(max_length=255)
    baud_rate = models.PositiveIntegerField(
        default=115200, validators=[MinValueValidator(50), MaxValueValidator(12_000_000)]
    )
    data_bits = models.PositiveSmallIntegerField(
        default=8, validators=[MinValueValidator(5), MaxValueValidator(8)]
    )
    parity = models.CharField(max_length=1, choices=Parity.choices, default=Parity.NONE)
    stop_bits = models.CharField(max_length=3, choices=StopBits.choices, default=StopBits.ONE)
    flow_control = models.CharField(
        max_length=10, choices=FlowControl.choices, default=FlowControl.NONE
    )
    labels = models.ManyToManyField(Label, blank=True, related_name="boards")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UNKNOWN)

    # Held by a run: automatic, expires unless renewed.
    lease_holder = models.CharField(max_length=100, blank=True)
    leased_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Locked by an admin for maintenance: manual, no expiry. A different thing from a lease.
    locked = models.BooleanField(default=False)
    locked_reason = models.CharField(max_length=255, blank=True)
    locked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    locked_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["machine__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["machine", "name"], name="board_unique_name"),
            models.UniqueConstraint(
                fields=["machine", "serial_port"], name="board_unique_serial_port"
            ),
            # A holder (a run) holds at most one board.
            models.UniqueConstraint(
                fields=["lease_holder"], condition=~Q(lease_holder=""), name="board_one_per_holder"
            ),
            models.CheckConstraint(
                condition=(Q(lease_holder="") & Q(lease_expires_at__isnull=True))
                | (~Q(lease_holder="") & Q(lease_expires_at__isnull=False)),
                name="board_lease_complete",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.machine.name}/{self.name}" if self.machine_id else self.name

    @property
    def is_leased(self) -> bool:
        return bool(self.lease_holder)


class Venv(models.Model):
    """One slot of a machine's pool of Python virtualenvs."""

    class State(models.TextChoices):
        PROVISIONING = "provisioning", "Provisioning"
        READY = "ready", "Ready"
        LEASED = "leased", "Leased"
        DIRTY = "dirty", "Dirty (needs reset)"
        BROKEN = "broken", "Broken"

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="venvs")
    slot = models.PositiveSmallIntegerField()
    path = models.CharField(max_length=500)
    python = models.CharField(max_length=255, default="python3")
    python_version = models.CharField(max_length=50, blank=True)
    requirements_hash = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=15, choices=State.choices, default=State.PROVISIONING)
    lease_holder = models.CharField(max_length=100, blank=True)
    leased_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_output = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    failure_count = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["machine__name", "slot"]
        constraints = [
            models.UniqueConstraint(fields=["machine", "slot"], name="venv_unique_slot"),
            models.UniqueConstraint(fields=["machine", "path"], name="venv_unique_path"),
            # A holder (a run) holds at most one venv...
            models.UniqueConstraint(
                fields=["lease_holder"], condition=~Q(lease_holder=""), name="venv_one_per_holder"
            ),
            # ...and a venv is LEASED exactly when it has a holder and an expiry.
            models.CheckConstraint(
                condition=(
                    Q(state="leased") & ~Q(lease_holder="") & Q(lease_expires_at__isnull=False)
                )
                | (~Q(state="leased") & Q(lease_holder="") & Q(lease_expires_at__isnull=True)),
                name="venv_lease_matches_state",
            ),
        ]
        indexes = [models.Index(fields=["machine", "state"], name="venv_machine_state")]

    def __str__(self) -> str:
        return f"{self.machine.name}:{self.slot}" if self.machine_id else self.path


class AuditEntry(models.Model):
    """Who changed what on a machine, board, pool or credential, and when. Never the secret."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # api / admin / cli / system
    source = models.CharField(max_length=20, default="system")
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=32)
    target_id = models.BigIntegerField(null=True, blank=True)
    target_repr = models.CharField(max_length=255, blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.target_repr}"
