from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from jenkins import services
from jenkins.models import ApiToken
from tests.factories import make_api_token, make_user

pytestmark = pytest.mark.django_db


def me(header: str | None):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    return client.get("/api/v1/me/")


def test_token_is_stored_only_as_a_hash():
    user = make_user("alice")
    token, secret = make_api_token(user)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM jenkins_apitoken WHERE id = %s", [token.pk])
        row = cursor.fetchone()
    assert not any(isinstance(value, str) and secret in value for value in row)
    assert not any(isinstance(value, str) and secret[10:] in value for value in row)
    assert token.key_hash == services.token_hash(secret) and len(token.key_hash) == 64
    assert token.prefix == secret[:10]


@pytest.mark.parametrize("scheme", ["Bearer", "Token", "bearer"])
def test_bearer_and_token_schemes_authenticate(scheme):
    user = make_user("alice")
    _, secret = make_api_token(user)
    response = me(f"{scheme} {secret}")
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_anonymous_still_gets_403_and_bad_tokens_get_401_with_a_reason():
    user = make_user("alice")
    token, secret = make_api_token(user, "ci", expires_at=timezone.now() + timedelta(days=1))
    assert me(None).status_code == 403
    response = me("Bearer tms_not-a-real-token")
    assert response.status_code == 401
    assert response.json()["message"] == "Invalid API token."
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert me("Bearer").status_code == 401
    assert "Malformed" in me("Bearer a b").json()["message"]

    services.api_token_revoke(token=token, actor=user, source="test")
    response = me(f"Bearer {secret}")
    assert response.status_code == 401
    assert response.json()["message"].startswith(f"API token {token.prefix}... (ci) was revoked")

    other, other_secret = make_api_token(user, "short", expires_at=timezone.now() + timedelta(1))
    ApiToken.objects.filter(pk=other.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = me(f"Token {other_secret}")
    assert response.status_code == 401 and "expired on" in response.json()["message"]


def test_inactive_user_is_refused():
    user = make_user("alice")
    _, secret = make_api_token(user)
    user.is_active = False
    user.save()
    assert me(f"Bearer {secret}").status_code == 401


def test_last_used_is_written_at_most_once_a_minute():
    user = make_user("alice")
    token, secret = make_api_token(user)
    assert token.last_used_at is None
    me(f"Bearer {secret}")
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    me(f"Bearer {secret}")
    token.refresh_from_db()
    assert token.last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    me(f"Bearer {secret}")
    token.refresh_from_db()
    assert token.last_used_at > first - timedelta(minutes=2)


def test_revoke_through_the_api_then_the_token_no_longer_works():
    user = make_user("alice")
    client = APIClient()
    client.force_authenticate(user)
    created = client.post("/api/v1/tokens/", {"name": "pipeline"}, format="json").json()
    assert me(f"Bearer {created['token']}").status_code == 200
    assert client.delete(f"/api/v1/tokens/{created['id']}/").status_code == 204
    assert me(f"Bearer {created['token']}").status_code == 401
    assert client.get(f"/api/v1/tokens/{created['id']}/").json()["active"] is False
    # The name is free again once the old token is revoked.
    assert client.post("/api/v1/tokens/", {"name": "pipeline"}, format="json").status_code == 201


def test_a_token_works_for_writes_without_csrf():
    user = make_user("alice")
    _, secret = make_api_token(user)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = client.post("/api/v1/tokens/", {"name": "second"}, format="json")
    assert response.status_code == 201
