from __future__ import annotations

import posixpath
from typing import Any

from django.db import transaction
from django.db.models import Max

from machines.services.audit import Actor, as_user
from machines.services.labels import labels_get_or_create
from machines.services.pool import requirements_hash
from test_management_system.errors import ApplicationError
from test_runner.models import TestCase, TestCaseVersion

MAX_FILES = 200
MAX_FILE_BYTES = 1024 * 1024
CASE_FIELDS = ("name", "description", "kind", "required_os", "needs_board", "default_timeout")
VERSION_FIELDS = ("files", "entry_point", "arguments", "requirements")


def check_files(files: dict[str, Any]) -> dict[str, str]:
    """Relative, normalised, harmless paths to text: what may be uploaded to a workspace."""
    if not isinstance(files, dict):
        raise ApplicationError("files must be an object of path -> text.", extra={"field": "files"})
    if len(files) > MAX_FILES:
        raise ApplicationError(f"At most {MAX_FILES} files.", extra={"field": "files"})
    clean: dict[str, str] = {}
    for path, content in files.items():
        normal = posixpath.normpath(str(path).replace("\\", "/"))
        if (
            not path
            or normal.startswith(("/", "../"))
            or normal in (".", "..")
            or ":" in normal
            or "\x00" in normal
            or any(part.startswith(".") and part not in (".",) for part in normal.split("/"))
        ):
            raise ApplicationError(
                f"File path {path!r} must be relative, inside the workspace, without hidden or "
                "drive parts.",
                extra={"field": "files"},
            )
        if not isinstance(content, str):
            raise ApplicationError(f"File {path!r} must be text.", extra={"field": "files"})
        if len(content.encode()) > MAX_FILE_BYTES:
            raise ApplicationError(
                f"File {path!r} is larger than {MAX_FILE_BYTES // 1024} KiB.",
                extra={"field": "files"},
            )
        clean[normal] = content
    return clean


def _check_version(kind: str, files: dict[str, str], entry_point: str) -> None:
    if not entry_point.strip():
        raise ApplicationError("entry_point is required.", extra={"field": "entry_point"})
    if kind == TestCase.Kind.SCRIPT:
        script = entry_point.split()[0]
        if script not in files:
            raise ApplicationError(
                f"The script {script!r} named by entry_point is not among the files.",
                extra={"field": "entry_point"},
            )
    if kind == TestCase.Kind.PYTEST and not files:
        raise ApplicationError("A pytest case needs its test files.", extra={"field": "files"})


def _new_version(
    *, case: TestCase, actor: Actor, fields: dict[str, Any], change_note: str
) -> TestCaseVersion:
    files = check_files(fields.get("files") or {})
    entry_point = str(fields.get("entry_point") or "")
    _check_version(case.kind, files, entry_point)
    requirements = str(fields.get("requirements") or "")
    number = (case.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = TestCaseVersion.objects.create(
        case=case,
        number=number,
        files=files,
        entry_point=entry_point,
        arguments=list(fields.get("arguments") or []),
        requirements=requirements,
        requirements_hash=requirements_hash(requirements),
        change_note=change_note,
        created_by=as_user(actor),
    )
    case.current_version = version
    case.save(update_fields=["current_version", "updated_at"])
    return version


@transaction.atomic
def case_create(
    *,
    actor: Actor,
    name: str,
    kind: str,
    entry_point: str,
    files: dict[str, Any] | None = None,
    arguments: list[str] | None = None,
    requirements: str = "",
    description: str = "",
    required_os: str = "",
    needs_board: bool = False,
    board_labels: list[str] | tuple[str, ...] = (),
    labels: list[str] | tuple[str, ...] = (),
    default_timeout: int = 1800,
) -> TestCase:
    if kind == TestCase.Kind.BOARD:
        needs_board = True
    case = TestCase(
        name=name, kind=kind, description=description, required_os=required_os,
        needs_board=needs_board, default_timeout=default_timeout, owner=as_user(actor),
    )  # fmt: skip
    case.full_clean(exclude=["current_version"])
    case.save()
    case.labels.set(labels_get_or_create(labels))
    case.board_labels.set(labels_get_or_create(board_labels))
    _new_version(
        case=case,
        actor=actor,
        fields={"files": files, "entry_point": entry_point, "arguments": arguments,
                "requirements": requirements},
        change_note="created",
    )  # fmt: skip
    return case


@transaction.atomic
def case_update(
    *,
    case: TestCase,
    actor: Actor,
    change_note: str = "",
    labels: list[str] | None = None,
    board_labels: list[str] | None = None,
    **fields: Any,
) -> TestCase:
    """Changes the case; any change to what runs makes a new version (old runs keep theirs)."""
    unknown = set(fields) - set(CASE_FIELDS) - set(VERSION_FIELDS) - {"archived"}
    if unknown:
        raise ApplicationError(f"Cannot change {', '.join(sorted(unknown))}.")
    case = TestCase.objects.select_for_update().get(pk=case.pk)
    changed = [
        k for k in (*CASE_FIELDS, "archived") if k in fields and getattr(case, k) != fields[k]
    ]
    for key in changed:
        setattr(case, key, fields[key])
    if case.kind == TestCase.Kind.BOARD:
        case.needs_board = True
    case.full_clean(exclude=["current_version"])
    case.save()
    if labels is not None:
        case.labels.set(labels_get_or_create(labels))
    if board_labels is not None:
        case.board_labels.set(labels_get_or_create(board_labels))
    current = case.current_version
    merged = {
        key: fields.get(key, getattr(current, key) if current else None) for key in VERSION_FIELDS
    }
    if (
        current is None
        or any(merged[k] != getattr(current, k) for k in VERSION_FIELDS)
        or ("kind" in changed)
    ):
        _new_version(case=case, actor=actor, fields=merged, change_note=change_note)
    return case
