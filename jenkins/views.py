"""Plain Django views of the Jenkins app (the API views are in apis.py)."""

from __future__ import annotations

from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from jenkins import tms_client

CLIENT_PATH = Path(tms_client.__file__)


@require_safe
def tms_client_file(request: HttpRequest) -> HttpResponse:
    """The pipeline client, served from its one source file. No login: it holds no secret,
    and a pipeline fetches it before it has used its token."""
    response = HttpResponse(CLIENT_PATH.read_bytes(), content_type="text/x-python; charset=utf-8")
    response["Content-Disposition"] = 'inline; filename="tms_client.py"'
    response["Cache-Control"] = "no-cache"
    return response
