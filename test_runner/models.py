from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from machines.models import NAME_VALIDATOR, Board, Label, Machine, Venv


class TestCase(models.Model):
    class Kind(models.TextChoices):
        PYTEST = "pytest", "pytest suite"
        SCRIPT = "script", "Python script"
        BOARD = "board", "Board-run tests (EXEC_TEST over UART)"

    __test__ = False  # not a pytest test class

    name = models.CharField(max_length=100, unique=True, validators=[NAME_VALIDATOR])
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    labels = models.ManyToManyField(Label, blank=True, related_name="test_cases")
    required_os = models.CharField(max_length=10, choices=Machine.Os.choices, blank=True)
    needs_board = models.BooleanField(default=False)
    # A board with all of these labels (when needs_board).
    board_labels = models.ManyToManyField(Label, blank=True, related_name="board_test_cases")
    default_timeout = models.PositiveIntegerField(
        default=1800, validators=[MinValueValidator(5), MaxValueValidator(7 * 24 * 3600)]
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    current_version = models.ForeignKey(
        "TestCaseVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TestCaseVersion(models.Model):
    """One immutable edit of a case. A run points at the version it ran."""

    __test__ = False

    case = models.ForeignKey(TestCase, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    # relative path -> text content; uploaded to the run's workspace.
    files = models.JSONField(default=dict)
    # pytest: pytest arguments; script: the script then its arguments; board: test names.
    entry_point = models.CharField(max_length=500)
    arguments = models.JSONField(default=list, blank=True)
    requirements = models.TextField(blank=True)
    requirements_hash = models.CharField(max_length=64, blank=True)
    change_note = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["case", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["case", "number"], name="case_version_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.case.name} v{self.number}" if self.case_id else f"v{self.number}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    PROVISIONING = "provisioning", "Provisioning"
    RUNNING = "running", "Running"
    FINISHING = "finishing", "Finishing"
    DONE = "done", "Done"


class RunOutcome(models.TextChoices):
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    ERROR = "error", "Error"
    CANCELLED = "cancelled", "Cancelled"
    TIMED_OUT = "timed_out", "Timed out"


class ErrorCategory(models.TextChoices):
    NONE = "", "None"
    INFRASTRUCTURE = "infrastructure", "Infrastructure (machine, board, provisioning)"
    TEST = "test", "Test (the case itself)"


class RunSource(models.TextChoices):
    UI = "ui", "Web UI"
    API = "api", "API"
    JENKINS = "jenkins", "Jenkins"
    EXTERNAL = "external", "External runner"
    RETRY = "retry", "Retry"


class TestRun(models.Model):
    __test__ = False

    # Names the run's workspace on the host: ids repeat across databases (a restore, a test
    # database) and hosts keep old workspaces, so an id alone could adopt another run's files.
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    case = models.ForeignKey(TestCase, on_delete=models.PROTECT, related_name="runs")
    case_version = models.ForeignKey(TestCaseVersion, on_delete=models.PROTECT, related_name="runs")
    # What was asked for...
    requested_machine = models.ForeignKey(
        Machine, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_label = models.CharField(max_length=64, blank=True)
    requested_board = models.ForeignKey(
        Board, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # ...and what it got.
    machine = models.ForeignKey(
        Machine, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    venv = models.ForeignKey(
        Venv, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    board = models.ForeignKey(
        Board, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="test_runs",
    )  # fmt: skip
    source = models.CharField(max_length=10, choices=RunSource.choices, default=RunSource.API)
    parameters = models.JSONField(default=dict, blank=True)
    priority = models.SmallIntegerField(
        default=0, validators=[MinValueValidator(-100), MaxValueValidator(100)]
    )
    timeout = models.PositiveIntegerField(
        validators=[MinValueValidator(5), MaxValueValidator(7 * 24 * 3600)]
    )
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )

    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED)
    outcome = models.CharField(max_length=10, choices=RunOutcome.choices, blank=True)
    error_category = models.CharField(
        max_length=15, choices=ErrorCategory.choices, blank=True, default=""
    )
    status_message = models.TextField(blank=True)
    exit_code = models.IntegerField(null=True, blank=True)

    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatch_count = models.PositiveIntegerField(default=0)

    planned = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)

    worker = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    remote_workspace = models.CharField(max_length=500, blank=True)
    remote_pid = models.PositiveIntegerField(null=True, blank=True)
    # How far the events file has been read (bytes) and stored (seq).
    events_offset = models.BigIntegerField(default=0)
    last_seq = models.PositiveIntegerField(default=0)
    log_bytes = models.BigIntegerField(default=0)
    log_truncated = models.BooleanField(default=False)
    events_purged = models.BooleanField(default=False)

    cancel_requested = models.BooleanField(default=False)
    pause_requested = models.BooleanField(default=False)
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["-queued_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(status="done") & ~Q(outcome="")) | (~Q(status="done") & Q(outcome="")),
                name="run_outcome_only_when_done",
            ),
            models.CheckConstraint(
                condition=Q(requested_machine__isnull=False) | ~Q(requested_label=""),
                name="run_asks_for_machine_or_label",
            ),
        ]
        indexes = [
            # The history's default order (newest first): a page is an index range scan.
            models.Index(fields=["-queued_at", "-id"], name="run_recent"),
            models.Index(fields=["status", "-priority", "queued_at"], name="run_queue"),
            models.Index(fields=["requested_by", "-queued_at"], name="run_by_user"),
            models.Index(fields=["case", "-queued_at"], name="run_by_case"),
            models.Index(fields=["machine", "-queued_at"], name="run_by_machine"),
            models.Index(fields=["outcome", "-queued_at"], name="run_by_outcome"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.case.name}" if self.case_id else f"run {self.pk}"

    @property
    def holder(self) -> str:
        """The name this run holds leases under."""
        return f"run:{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status == RunStatus.DONE

    @property
    def done_tests(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped


class RunTransition(models.Model):
    """Every status change of a run: from, to, who or what, why."""

    run = models.ForeignKey(TestRun, on_delete=models.CASCADE, related_name="transitions")
    at = models.DateTimeField(auto_now_add=True)
    from_status = models.CharField(max_length=12, choices=RunStatus.choices)
    to_status = models.CharField(max_length=12, choices=RunStatus.choices)
    outcome = models.CharField(max_length=10, choices=RunOutcome.choices, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    by = models.CharField(max_length=255, blank=True)  # worker or service, when no user
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "at", "id"]

    def __str__(self) -> str:
        return f"{self.run_id}: {self.from_status} -> {self.to_status}"


class RunEvent(models.Model):
    """One runner event, stored as the runner wrote it; (run, seq) is unique, so storing a
    batch twice (a redelivered task, a resumed worker) changes nothing."""

    run = models.ForeignKey(TestRun, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    ts = models.DateTimeField()
    type = models.CharField(max_length=20)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="run_event_unique_seq")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"


class TestResult(models.Model):
    class Outcome(models.TextChoices):
        PLANNED = "planned", "Planned"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"
        ERROR = "error", "Error"
        SKIPPED = "skipped", "Skipped"
        XFAILED = "xfailed", "Expected failure"
        XPASSED = "xpassed", "Unexpected pass"

    __test__ = False

    run = models.ForeignKey(TestRun, on_delete=models.CASCADE, related_name="results")
    order = models.PositiveIntegerField(default=0)
    test_id = models.CharField(max_length=1000)
    name = models.CharField(max_length=500)
    file = models.CharField(max_length=500, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PLANNED)
    duration = models.FloatField(null=True, blank=True)
    message = models.TextField(blank=True)
    assertions = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "test_id"], name="result_unique_test")
        ]

    def __str__(self) -> str:
        return f"{self.test_id}: {self.outcome}"


class RunArtifact(models.Model):
    run = models.ForeignKey(TestRun, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=255)
    file = models.FileField(upload_to="artifacts/%Y/%m/")
    size = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "name"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="artifact_unique_name")]

    def __str__(self) -> str:
        return self.name


class IngestToken(models.Model):
    """A machine's secret for reporting its own suites' progress; only its SHA-256 is stored."""

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="ingest_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=16, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["machine", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"
