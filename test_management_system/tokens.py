"""What the two kinds of bearer token share: people's personal API tokens (jenkins/) and the
machines' ingest tokens (test_runner/ingest/). Both are random secrets stored only as a hash."""

from __future__ import annotations

import hashlib

from rest_framework import authentication, exceptions
from rest_framework.request import Request

SCHEMES = ("bearer", "token")


def _ours(request: Request) -> str | None:
    header = authentication.get_authorization_header(request).decode("latin-1").strip()
    scheme, _, rest = header.partition(" ")
    return rest.strip() if scheme.lower() in SCHEMES else None


def uses_bearer(request: Request) -> bool:
    """Whether the request carries an Authorization header of one of our schemes."""
    return _ours(request) is not None


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` (or ``Token <token>``) header; None
    when there is no such header (another scheme, or none), so that the next authentication
    class may answer. A header of ours without exactly one token is refused."""
    raw = _ours(request)
    if raw is not None and (not raw or " " in raw):
        raise exceptions.AuthenticationFailed(
            "Malformed Authorization header: use 'Bearer <token>' or 'Token <token>'."
        )
    return raw


def token_hash(raw: str) -> str:
    # A plain SHA-256 is enough: the secret has 256 bits of entropy, nothing to brute-force.
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()
