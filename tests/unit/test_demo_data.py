from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from machines.models import Board, Machine
from test_runner.models import TestCase, TestRun


@pytest.fixture
def var(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def _load(**kwargs) -> str:
    out = StringIO()
    call_command("demo_data", "--url", "http://127.0.0.1:9000/", stdout=out, **kwargs)
    return out.getvalue()


@pytest.mark.django_db
def test_demo_data_creates_a_working_admin_and_prints_its_login(
    var, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        output = _load(no_runs=True)
    password = (var / "demo_admin_password").read_text().strip()
    assert f"sign in as admin / {password}" in output
    assert "http://127.0.0.1:9000/" in output
    user = authenticate(username="admin", password=password)
    assert user is not None and user.is_staff and user.is_superuser


@pytest.mark.django_db
def test_demo_data_makes_a_machine_a_board_a_case_of_each_kind_and_runs(
    var, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        output = _load()
    machine = Machine.objects.get(name="this-host")
    assert machine.connector == Machine.Connector.LOCAL
    board = Board.objects.get(machine=machine)
    assert board.serial_port == str(var / "demo-board")
    assert set(TestCase.objects.values_list("kind", flat=True)) == {"pytest", "script", "board"}
    assert TestRun.objects.filter(machine__isnull=True, requested_machine=machine).count() == 3
    assert "Queued sample runs" in output


@pytest.mark.django_db
def test_demo_data_is_idempotent_and_repairs_a_changed_password(
    var, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        _load()
        admin = get_user_model().objects.get(username="admin")
        admin.set_password("something-else")
        admin.save()
        _load()
    password = (var / "demo_admin_password").read_text().strip()
    assert get_user_model().objects.filter(username="admin").count() == 1
    assert authenticate(username="admin", password=password) is not None
    assert Machine.objects.count() == 1 and TestCase.objects.count() == 3
    assert TestRun.objects.count() == 3  # sample runs only on a first start


@pytest.mark.django_db
def test_demo_data_refuses_production(var, settings):
    settings.PRODUCTION = True
    with pytest.raises(SystemExit):
        call_command("demo_data", stdout=StringIO(), stderr=StringIO())
    assert not get_user_model().objects.filter(username="admin").exists()


@pytest.mark.django_db
def test_local_machines_can_be_forbidden(var, settings, django_capture_on_commit_callbacks):
    settings.ALLOW_LOCAL_MACHINES = False
    err = StringIO()
    with django_capture_on_commit_callbacks(execute=False):
        call_command("demo_data", stdout=StringIO(), stderr=err)
    assert "ALLOW_LOCAL_MACHINES is off" in err.getvalue()
    assert not Machine.objects.exists()
