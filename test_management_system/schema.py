"""The OpenAPI schema documents the errors too, not only the happy path.

Every API error has one shape (``{"message", "extra"}``, see ``errors.py``), and clients (the
Jenkins pipeline client, scripts, generated clients) branch on the status code. So each
operation lists the error statuses it can really answer with, all pointing at one ``Error``
component. Which ones follow from the operation itself: authentication (401, 403), path ids
and pagination (404), input (400, 415), writes against the current state (409), the database
being down (503), and, for the few views that talk to a machine or a Jenkins server while the
caller waits, the gateway statuses those views declare in ``upstream_statuses``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db.models import Field, Model
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

ERROR_DESCRIPTIONS = {
    400: "Invalid input: `message` names the first problem, `extra.fields` has them all.",
    401: "The API token is malformed, unknown, revoked or expired (see `WWW-Authenticate`).",
    403: "Not signed in, or not allowed to do this.",
    404: "No such object, or none that you may see.",
    409: "The object's current state does not allow this (e.g. the run already finished).",
    413: "The request body is larger than the server accepts.",
    415: "The request body is not in a supported media type (send JSON).",
    502: "The machine or Jenkins server could not be used (unreachable, refused, bad answer).",
    503: "A service this needs is unreachable right now; nothing was changed. Retry later.",
    504: "The Jenkins server did not answer in time.",
}


@extend_schema_serializer(component_name="Error")
class ErrorOutput(serializers.Serializer):
    message = serializers.CharField(help_text="What went wrong, for a person to read.")
    extra = serializers.DictField(
        child=serializers.JSONField(), help_text="The same facts, for programs."
    )


class ApiAutoSchema(AutoSchema):
    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        # DRF drops allow_null / allow_blank from the fields it makes read-only, so a NULL
        # foreign key or an empty choice would be answered but not documented. Read-only
        # fields take them back from the model field they show.
        if isinstance(serializer, serializers.ModelSerializer):
            model: type[Model] = serializer.Meta.model
            for field in serializer.fields.values():
                source = field.source
                if not field.read_only or not isinstance(source, str) or "." in source:
                    continue
                try:
                    model_field = model._meta.get_field(source)
                except FieldDoesNotExist:
                    continue
                if not isinstance(model_field, Field):  # a reverse relation or generic key
                    continue
                if model_field.null and not model_field.many_to_many:
                    field.allow_null = True
                if model_field.blank and isinstance(field, serializers.ChoiceField):
                    field.allow_blank = True
        result: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        return result

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        for code in sorted(self._error_statuses(operation)):
            responses.setdefault(str(code), self._error_response(code))
        return operation

    def _error_statuses(self, operation: dict[str, Any]) -> set[int]:
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        write = self.method in WRITE_METHODS
        codes = {503}
        if operation.get("security") and {} not in operation["security"]:
            codes |= {401, 403}
        if write or has_body or any(p.get("in") == "query" for p in parameters):
            codes.add(400)
        if write or any(p.get("in") in ("path", "query") for p in parameters):
            # Services look up what a write refers to; a page past the end is a 404 too.
            codes.add(404)
        if write:
            codes.add(409)
        if has_body:
            codes |= {413, 415}
        codes |= set(getattr(self.view, "upstream_statuses", ()))
        return codes

    def _error_response(self, code: int) -> dict[str, Any]:
        response: dict[str, Any] = self._get_response_for_code(
            ErrorOutput, str(code), media_types=["application/json"]
        )
        response["description"] = ERROR_DESCRIPTIONS.get(code, "")
        return response
