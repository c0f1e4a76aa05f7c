from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from machines.fields import SecretField
from machines.models import NAME_VALIDATOR

# "folder/sub/job": no empty part, no leading or trailing slash.
JOB_NAME_VALIDATOR = RegexValidator(
    r"^[^/\s][^/]*(/[^/\s][^/]*)*$",
    "A job's full name: its folders and name separated by '/', e.g. 'firmware/nightly'.",
)
# The parameter that carries our trigger id to Jenkins on every build we start.
TRIGGER_PARAMETER = "TMS_TRIGGER_ID"


class JenkinsServer(models.Model):
    """A Jenkins controller this service drives, with the account it uses there."""

    name = models.CharField(max_length=100, unique=True, validators=[NAME_VALIDATOR])
    url = models.URLField(max_length=500, help_text="Base URL, e.g. https://ci.lab.example/")
    username = models.CharField(max_length=150, blank=True)
    # A Jenkins API token (user -> Security -> API Token), never a password. Write-only.
    api_token = SecretField()
    verify_tls = models.BooleanField(default=True)
    connect_timeout = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(120)], help_text="seconds"
    )
    read_timeout = models.PositiveSmallIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(600)], help_text="seconds"
    )
    # A build still unfinished this long after it was triggered is given up (never tracked
    # forever, whatever happened to Jenkins or to us).
    give_up_after_hours = models.PositiveSmallIntegerField(
        default=24, validators=[MinValueValidator(1), MaxValueValidator(24 * 14)]
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class JenkinsJob(models.Model):
    """A job (in folders or not) that users may trigger from here."""

    server = models.ForeignKey(JenkinsServer, on_delete=models.PROTECT, related_name="jobs")
    full_name = models.CharField(max_length=500, validators=[JOB_NAME_VALIDATOR])
    description = models.TextField(blank=True)
    # name -> value, sent unless the trigger overrides them.
    parameter_defaults = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["server__name", "full_name"]
        constraints = [
            models.UniqueConstraint(fields=["server", "full_name"], name="jenkins_job_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.server.name}:{self.full_name}" if self.server_id else self.full_name


class JenkinsBuild(models.Model):
    """One build we asked Jenkins for, tracked queue item -> build number -> result."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Building"
        DONE = "done", "Done"

    class Result(models.TextChoices):
        SUCCESS = "SUCCESS", "Success"
        UNSTABLE = "UNSTABLE", "Unstable"
        FAILURE = "FAILURE", "Failure"
        ABORTED = "ABORTED", "Aborted"
        NOT_BUILT = "NOT_BUILT", "Not built"

    job = models.ForeignKey(JenkinsJob, on_delete=models.PROTECT, related_name="builds")
    # Sent as TMS_TRIGGER_ID: finds the build again whatever happened to the request, and makes
    # every request unique (Jenkins merges identical queued requests).
    trigger_id = models.CharField(max_length=64, unique=True)
    parameters = models.JSONField(default=dict, blank=True)
    queue_id = models.PositiveBigIntegerField(null=True, blank=True)
    number = models.PositiveIntegerField(null=True, blank=True)
    url = models.URLField(max_length=1000, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    result = models.CharField(max_length=10, choices=Result.choices, blank=True)
    status_message = models.TextField(blank=True)

    # Console: the text we hold (the tail, when long), how much was dropped before it, and the
    # byte offset on Jenkins to read from next (X-Text-Size).
    console_text = models.TextField(blank=True)
    console_dropped = models.PositiveBigIntegerField(default=0)
    console_offset = models.PositiveBigIntegerField(default=0)
    console_complete = models.BooleanField(default=False)
    # The imported testReport (summary and cases), or null when the build has none.
    test_report = models.JSONField(null=True, blank=True)

    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The test run this build belongs to (e.g. the firmware it flashes), shown next to the run.
    run = models.ForeignKey(
        "test_runner.TestRun", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="jenkins_builds",
    )  # fmt: skip
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # Tracking: attempts to send the trigger, polls in a row that failed or saw no change, when
    # the next poll is due (a build whose due time is long past lost its poll chain), and a
    # version every poll bumps so that two chains for one build never both write.
    trigger_attempts = models.PositiveSmallIntegerField(default=0)
    poll_failures = models.PositiveIntegerField(default=0)
    idle_polls = models.PositiveIntegerField(default=0)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_poll_at"], name="jenkins_build_due")]

    def __str__(self) -> str:
        number = f"#{self.number}" if self.number else f"(trigger {self.trigger_id[:8]})"
        return f"{self.job_id and self.job.full_name} {number}"

    @property
    def is_done(self) -> bool:
        return self.status == self.Status.DONE

    @property
    def console_length(self) -> int:
        """Characters received so far, dropped ones included: the offset a live tail resumes
        from."""
        return self.console_dropped + len(self.console_text)


class ApiToken(models.Model):
    """A personal API token for scripts and pipelines. Only its SHA-256 is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # The first characters of the token, to tell tokens apart in lists and logs.
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=Q(revoked_at__isnull=True),
                name="api_token_unique_active_name",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"


class RunCallback(models.Model):
    """A URL told (POSTed to) when a test run finishes: e.g. a Jenkins webhook-step URL that a
    pipeline waits on instead of polling."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(
        "test_runner.TestRun", on_delete=models.CASCADE, related_name="callbacks"
    )
    url = models.CharField(max_length=2000)
    # The service's own address as the creator called it, for the links in the payload.
    base_url = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # When a pending callback may next be tried (once its run has finished). A claimed
    # callback has this pushed into the future, so two sweeps never send it both.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "url"], name="run_callback_unique_url")
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="run_callback_due")]

    def __str__(self) -> str:
        return f"run {self.run_id} -> {self.url}"
