"""The settings profiles, each checked in a fresh interpreter with a controlled environment."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PROD_ENV = {
    "TMS_ENV": "production",
    "SECRET_KEY": "x9!" + "k" * 60 + "Zq#2vB",
    "FIELD_ENCRYPTION_KEYS": "a-production-salt",
    "ALLOWED_HOSTS": "tms.example.com",
    "DATABASE_URL": "sqlite:////tmp/tms-settings-test.sqlite3",
}


def _manage(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "TMS_VAR_DIR": str(tmp_path / "var"), "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_under_production_settings_is_clean(tmp_path):
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], PROD_ENV, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stderr


@pytest.mark.parametrize("missing", ["SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "ALLOWED_HOSTS"])
def test_production_refuses_to_start_without_a_required_setting(tmp_path, missing):
    env = {k: v for k, v in PROD_ENV.items() if k != missing}
    result = _manage(["check"], env, tmp_path)
    assert result.returncode != 0
    assert f"{missing} must be set when TMS_ENV=production." in result.stderr
    assert not (tmp_path / "var").exists(), "production never writes generated secrets"


def test_development_defaults_need_no_service(tmp_path):
    script = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE']);print(s.DATABASES['default']['NAME']);"
        "print(s.CELERY_BROKER_URL);print(s.DEBUG)"
    )
    result = _manage(["shell", "--no-imports", "-c", script], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    engine, name, broker, debug = result.stdout.split()
    assert engine == "django.db.backends.sqlite3"
    assert name == str(tmp_path / "var" / "db.sqlite3")
    assert broker == "filesystem://"
    assert debug == "True"
    # The generated secrets are kept, private, and stable across starts.
    secret = tmp_path / "var" / "secret_key"
    assert secret.stat().st_mode & 0o777 == 0o600
    first = secret.read_text()
    assert _manage(["check"], {}, tmp_path).returncode == 0
    assert secret.read_text() == first


def test_redis_url_becomes_broker_and_result_backend(tmp_path):
    script = (
        "from django.conf import settings as s;print(s.CELERY_BROKER_URL, s.CELERY_RESULT_BACKEND)"
    )
    result = _manage(
        ["shell", "--no-imports", "-c", script], {"REDIS_URL": "redis://10.0.0.9:6380/2"}, tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["redis://10.0.0.9:6380/2", "redis://10.0.0.9:6380/2"]


def test_unknown_profile_is_refused(tmp_path):
    result = _manage(["check"], {"TMS_ENV": "staging"}, tmp_path)
    assert result.returncode != 0
    assert "TMS_ENV must be development, test or production" in result.stderr


def _env_names_read_by(path: Path) -> set[str]:
    source = path.read_text()
    return set(re.findall(r"""env(?:\.\w+)?\(\s*["']([A-Z][A-Z0-9_]*)["']""", source)) | set(
        re.findall(r"""_kept_secret\(\s*["']([A-Z][A-Z0-9_]*)["']""", source)
    )


def test_env_example_lists_every_variable_the_settings_read():
    read = _env_names_read_by(REPO_ROOT / "test_management_system" / "settings.py")
    listed = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO_ROOT / ".env.example").read_text(), re.M)
    )
    assert len(read) > 20
    assert read - listed == set(), "add these to .env.example"
