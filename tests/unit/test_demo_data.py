from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command


@pytest.mark.django_db
def test_demo_data_creates_a_working_admin_and_prints_its_login(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("demo_data", "--url", "http://127.0.0.1:9000/", stdout=out)
    password = (tmp_path / "demo_admin_password").read_text().strip()
    assert f"sign in as admin / {password}" in out.getvalue()
    assert "http://127.0.0.1:9000/" in out.getvalue()
    user = authenticate(username="admin", password=password)
    assert user is not None and user.is_staff and user.is_superuser


@pytest.mark.django_db
def test_demo_data_is_idempotent_and_repairs_a_changed_password(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("demo_data", stdout=StringIO())
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("something-else")
    admin.save()
    call_command("demo_data", stdout=StringIO())
    password = (tmp_path / "demo_admin_password").read_text().strip()
    assert get_user_model().objects.filter(username="admin").count() == 1
    assert authenticate(username="admin", password=password) is not None


@pytest.mark.django_db
def test_demo_data_refuses_production(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.PRODUCTION = True
    with pytest.raises(SystemExit):
        call_command("demo_data", stdout=StringIO(), stderr=StringIO())
    assert not get_user_model().objects.filter(username="admin").exists()
