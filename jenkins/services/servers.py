"""Jenkins servers and the jobs users may trigger on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from jenkins.client import JenkinsClient, JenkinsError
from jenkins.models import JenkinsJob, JenkinsServer
from machines.services.audit import Actor, audit_record
from test_management_system.errors import ApplicationError, ConflictError

SERVER_FIELDS = (
    "name", "url", "username", "verify_tls", "connect_timeout", "read_timeout",
    "give_up_after_hours", "enabled",
)  # fmt: skip
JOB_FIELDS = ("full_name", "description", "parameter_defaults", "enabled")


def _check_parameter_defaults(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise ApplicationError(
            "Parameter defaults must be an object of parameter name -> value.",
            extra={"field": "parameter_defaults"},
        )
    from jenkins.models import TRIGGER_PARAMETER

    if TRIGGER_PARAMETER in value:
        raise ApplicationError(
            f"{TRIGGER_PARAMETER} is set by this service on every build; do not set it.",
            extra={"field": "parameter_defaults"},
        )
    return {k: "" if v is None else str(v) for k, v in value.items()}


@transaction.atomic
def jenkins_server_create(
    *,
    actor: Actor,
    source: str,
    name: str,
    url: str,
    username: str = "",
    api_token: str | None = None,
    verify_tls: bool = True,
    connect_timeout: int = 5,
    read_timeout: int = 30,
    give_up_after_hours: int = 24,
    enabled: bool = True,
) -> JenkinsServer:
    server = JenkinsServer(
        name=name,
        url=url,
        username=username,
        api_token=api_token or None,
        verify_tls=verify_tls,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        give_up_after_hours=give_up_after_hours,
        enabled=enabled,
    )
    server.full_clean()
    server.save()
    changes: dict[str, Any] = {f: getattr(server, f) for f in SERVER_FIELDS}
    changes["api_token"] = "set" if api_token else "cleared"
    audit_record(
        actor=actor, source=source, action="jenkins_server.create", target=server, changes=changes
    )
    return server


@transaction.atomic
def jenkins_server_update(
    *, server: JenkinsServer, actor: Actor, source: str, **fields: Any
) -> JenkinsServer:
    """Changes only the fields given. ``api_token``: absent or None keeps, "" clears."""
    unknown = set(fields) - set(SERVER_FIELDS) - {"api_token"}
    if unknown:
        raise ApplicationError(f"Cannot change {', '.join(sorted(unknown))} here.")
    server = JenkinsServer.objects.select_for_update().get(pk=server.pk)
    changes: dict[str, Any] = {}
    for name in SERVER_FIELDS:
        if name in fields and fields[name] != getattr(server, name):
            changes[name] = fields[name]
            setattr(server, name, fields[name])
    token = fields.get("api_token")
    if token is not None:
        server.api_token = token or None  # type: ignore[assignment]  # the field takes text
        changes["api_token"] = "set" if token else "cleared"
    server.full_clean()
    if changes:
        server.save(update_fields=[*changes, "updated_at"])
        audit_record(
            actor=actor, source=source, action="jenkins_server.update", target=server,
            changes=changes,
        )  # fmt: skip
    return server


@transaction.atomic
def jenkins_server_delete(*, server: JenkinsServer, actor: Actor, source: str) -> None:
    if server.jobs.exists():
        raise ConflictError(
            f"Jenkins server {server.name} still has jobs configured; delete them first, or "
            "disable the server to keep the build history."
        )
    audit_record(actor=actor, source=source, action="jenkins_server.delete", target=server)
    server.delete()


@dataclass
class ServerCheckResult:
    ok: bool
    version: str
    message: str


def jenkins_server_check(*, server: JenkinsServer) -> ServerCheckResult:
    """Connects with the stored credentials and reads the version. Writes nothing."""
    try:
        version = JenkinsClient.for_server(server).version()
    except JenkinsError as exc:
        return ServerCheckResult(ok=False, version="", message=exc.message)
    return ServerCheckResult(ok=True, version=version, message=f"Connected to Jenkins {version}.")


def _check_unique_job(server: JenkinsServer, full_name: str, exclude: int | None = None) -> None:
    same = JenkinsJob.objects.filter(server=server, full_name=full_name)
    if exclude is not None:
        same = same.exclude(pk=exclude)
    if same.exists():
        raise ApplicationError(
            f"Job {full_name!r} on {server.name} already exists.", extra={"field": "full_name"}
        )


@transaction.atomic
def jenkins_job_create(
    *,
    actor: Actor,
    source: str,
    server: JenkinsServer,
    full_name: str,
    description: str = "",
    parameter_defaults: dict[str, Any] | None = None,
    enabled: bool = True,
) -> JenkinsJob:
    full_name = full_name.strip()
    _check_unique_job(server, full_name)
    job = JenkinsJob(
        server=server,
        full_name=full_name,
        description=description,
        parameter_defaults=_check_parameter_defaults(parameter_defaults or {}),
        enabled=enabled,
    )
    job.full_clean()
    job.save()
    audit_record(
        actor=actor, source=source, action="jenkins_job.create", target=job,
        changes={"server": server.name, **{f: getattr(job, f) for f in JOB_FIELDS}},
    )  # fmt: skip
    return job


@transaction.atomic
def jenkins_job_update(*, job: JenkinsJob, actor: Actor, source: str, **fields: Any) -> JenkinsJob:
    unknown = set(fields) - set(JOB_FIELDS)
    if unknown:
        raise ApplicationError(f"Cannot change {', '.join(sorted(unknown))} here.")
    if "parameter_defaults" in fields:
        fields["parameter_defaults"] = _check_parameter_defaults(fields["parameter_defaults"])
    job = JenkinsJob.objects.select_for_update().get(pk=job.pk)
    if "full_name" in fields:
        fields["full_name"] = fields["full_name"].strip()
        _check_unique_job(job.server, fields["full_name"], exclude=job.pk)
    changes = {k: v for k, v in fields.items() if v != getattr(job, k)}
    for key, value in changes.items():
        setattr(job, key, value)
    job.full_clean()
    if changes:
        job.save(update_fields=[*changes, "updated_at"])
        audit_record(
            actor=actor, source=source, action="jenkins_job.update", target=job, changes=changes
        )
    return job


@transaction.atomic
def jenkins_job_delete(*, job: JenkinsJob, actor: Actor, source: str) -> None:
    if job.builds.exists():
        raise ConflictError(
            f"Job {job.full_name} has builds on record; disable it instead of deleting it, so "
            "that their history stays."
        )
    audit_record(actor=actor, source=source, action="jenkins_job.delete", target=job)
    job.delete()
