"""Forms of the web pages. They shape input; the services decide what is valid, and their
errors come back onto the field they name (``ApplicationError.extra["field"]``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.http import QueryDict

from machines import selectors as machine_selectors
from machines.models import Board, Label, Machine
from machines.selectors import User
from test_management_system.errors import ApplicationError
from test_runner import selectors
from test_runner.models import RunOutcome, RunSource, RunStatus, TestCase

MAX_UPLOAD = 1024 * 1024


def apply_service_error(form: forms.Form, exc: ApplicationError, fields: dict[str, str]) -> None:
    """Puts a service's error on the form field it concerns, or on the form as a whole."""
    name = fields.get(str(exc.extra.get("field", "")), "")
    form.add_error(name if name in form.fields else None, exc.message)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data: Any, initial: Any = None) -> Any:
        if isinstance(data, list | tuple):
            return [super(MultipleFileField, self).clean(item, initial) for item in data]
        return super().clean(data, initial)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


class ParametersField(forms.CharField):
    """NAME=value, one a line: what a person types; the service checks names and sizes."""

    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "FIRMWARE=v1.2.3\nCHANNEL=2"})

    def to_python(self, value: Any) -> dict[str, str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        parameters: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, val = line.partition("=")
            if not sep:
                raise forms.ValidationError(f"Line {number}: write NAME=value.")
            parameters[name.strip()] = val.strip()
        return parameters


class RunStartForm(forms.Form):
    case = forms.ModelChoiceField(queryset=TestCase.objects.none(), empty_label="Choose a case")
    machine = forms.ModelChoiceField(
        queryset=Machine.objects.none(), required=False, empty_label="(any machine with the label)"
    )
    label = forms.ChoiceField(
        required=False, help_text="Run on whichever machine with this label is free first."
    )
    board = forms.ModelChoiceField(
        queryset=Board.objects.none(), required=False, empty_label="(any matching board)",
        help_text="Only for cases that use a board; the board must be on the chosen machine.",
    )  # fmt: skip
    parameters = ParametersField(required=False, help_text="NAME=value, one a line.")
    timeout = forms.IntegerField(
        required=False, min_value=5, max_value=7 * 24 * 3600,
        help_text="Seconds; empty: the case's default.",
    )  # fmt: skip
    priority = forms.IntegerField(
        required=False, min_value=-100, max_value=100, initial=0,
        help_text="Higher goes first. Above 0: admins only.",
    )  # fmt: skip

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["case"].queryset = selectors.case_list(user=user).filter(  # type: ignore[attr-defined]
            archived=False, current_version__isnull=False
        )
        self.fields["case"].to_field_name = "name"  # type: ignore[attr-defined]
        machines = machine_selectors.machine_list(user=user)
        self.fields["machine"].queryset = machines  # type: ignore[attr-defined]
        self.fields["machine"].to_field_name = "name"  # type: ignore[attr-defined]
        labels = Label.objects.filter(machines__in=machines.values("pk")).distinct()
        self.fields["label"].choices = [("", "(a specific machine)")] + [  # type: ignore[attr-defined]
            (name, name) for name in labels.values_list("name", flat=True)
        ]
        self.fields["board"].queryset = machine_selectors.board_list(user=user)  # type: ignore[attr-defined]
        if not machine_selectors.is_admin(user):
            self.fields["priority"].max_value = 0  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("machine") and data.get("label"):
            self.add_error("label", "Choose a machine or a label, not both.")
        elif not data.get("machine") and not data.get("label") and not self.errors:
            self.add_error("machine", "Choose a machine, or a label to run on any of its machines.")
        return data

    # Service error field -> form field.
    SERVICE_FIELDS = {
        "machine": "machine", "label": "label", "board": "board", "parameters": "parameters",
        "priority": "priority", "timeout": "timeout", "case_version": "case",
    }  # fmt: skip


class HistoryForm(forms.Form):
    """The history page's filters, turned into RunFilter's query."""

    SORTS = {
        "-queued_at": "Newest first",
        "queued_at": "Oldest first",
        "-finished_at": "Recently finished",
        "case__name": "Case name",
        "status": "Status",
        "outcome": "Outcome",
        "machine__name": "Machine",
    }

    q = forms.CharField(required=False, label="Search", max_length=200)
    user = forms.CharField(required=False, max_length=150)
    mine = forms.BooleanField(required=False, label="Only mine")
    status = forms.ChoiceField(required=False, choices=[("", "any"), *RunStatus.choices])
    outcome = forms.ChoiceField(required=False, choices=[("", "any"), *RunOutcome.choices])
    source = forms.ChoiceField(required=False, choices=[("", "any"), *RunSource.choices])
    machine = forms.CharField(required=False, max_length=100)
    case = forms.CharField(required=False, max_length=100)
    label = forms.CharField(required=False, max_length=64)
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    sort = forms.ChoiceField(required=False, choices=list(SORTS.items()))

    def filter_data(self) -> QueryDict:
        """RunFilter's query string: the same names, dates as a half-open range of days."""
        data = QueryDict(mutable=True)
        cleaned = self.cleaned_data
        for name in ("user", "status", "outcome", "source", "machine", "case", "label"):
            if cleaned.get(name):
                data[name] = cleaned[name]
        if cleaned.get("mine"):
            data["mine"] = "true"
        if cleaned.get("since"):
            data["queued_after"] = dt.datetime.combine(cleaned["since"], dt.time.min).isoformat()
        if cleaned.get("until"):
            end = cleaned["until"] + dt.timedelta(days=1)
            data["queued_before"] = dt.datetime.combine(end, dt.time.min).isoformat()
        return data


class CaseForm(forms.Form):
    name = forms.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100,
        error_messages={"invalid": "Use letters, digits, '.', '_' and '-', starting with a "
                        "letter or digit."},
    )  # fmt: skip
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    kind = forms.ChoiceField(choices=TestCase.Kind.choices)
    entry_point = forms.CharField(
        max_length=500,
        help_text="pytest: its arguments (e.g. tests/); script: the script and its arguments; "
        "board: the board test names.",
    )
    arguments = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="One a line."
    )
    requirements = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="requirements.txt lines for the venv.",
    )  # fmt: skip
    required_os = forms.ChoiceField(required=False, choices=[("", "any"), *Machine.Os.choices])
    needs_board = forms.BooleanField(required=False)
    labels = forms.CharField(required=False, help_text="Comma separated.")
    board_labels = forms.CharField(
        required=False, help_text="A board with all of these labels (comma separated)."
    )
    default_timeout = forms.IntegerField(min_value=5, max_value=7 * 24 * 3600, initial=1800)
    file_path = forms.CharField(
        required=False, max_length=500, label="File path",
        help_text="Add or replace one file by typing it here (e.g. tests/test_smoke.py).",
    )  # fmt: skip
    file_content = forms.CharField(
        required=False, strip=False, label="File content",
        widget=forms.Textarea(attrs={"rows": 10, "class": "code", "spellcheck": "false"}),
    )  # fmt: skip
    uploads = MultipleFileField(
        required=False, label="Upload files",
        help_text="Each file keeps its name; an upload replaces a file of the same name.",
    )  # fmt: skip
    remove = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Remove files"
    )
    change_note = forms.CharField(required=False, max_length=255, label="What changed")

    SERVICE_FIELDS = {
        "name": "name", "kind": "kind", "entry_point": "entry_point", "files": "file_path",
        "default_timeout": "default_timeout", "required_os": "required_os",
    }  # fmt: skip

    def __init__(self, *args: Any, existing_files: dict[str, str] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.existing_files = existing_files or {}
        self.fields["remove"].choices = [(p, p) for p in sorted(self.existing_files)]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("file_content") and not data.get("file_path"):
            self.add_error("file_path", "Name the file this content goes to.")
        return data

    def files_after(self, uploads: list[Any]) -> dict[str, str]:
        files = {
            p: c for p, c in self.existing_files.items() if p not in self.cleaned_data["remove"]
        }
        for upload in uploads:
            if upload.size > MAX_UPLOAD:
                raise ApplicationError(
                    f"{upload.name} is larger than 1 MiB.", extra={"field": "files"}
                )
            try:
                files[upload.name] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise ApplicationError(
                    f"{upload.name} is not UTF-8 text.", extra={"field": "files"}
                ) from None
        if self.cleaned_data.get("file_path"):
            files[self.cleaned_data["file_path"].strip()] = self.cleaned_data["file_content"]
        return files

    def service_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "description": data["description"],
            "kind": data["kind"],
            "entry_point": data["entry_point"],
            "arguments": _lines(data["arguments"]),
            "requirements": data["requirements"],
            "required_os": data["required_os"],
            "needs_board": data["needs_board"],
            "labels": _names(data["labels"]),
            "board_labels": _names(data["board_labels"]),
            "default_timeout": data["default_timeout"],
        }
