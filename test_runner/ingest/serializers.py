from __future__ import annotations

from typing import Any

from rest_framework import serializers

from test_runner.ingest.services import MAX_TESTS, STATUS_OUTCOMES
from test_runner.services.cases import MAX_FILE_BYTES, MAX_FILES


class StrictCharField(serializers.CharField):
    """Text only: numbers, booleans, lists are refused rather than turned into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


def _name() -> StrictCharField:
    return StrictCharField(max_length=255, trim_whitespace=False)


def _path() -> StrictCharField:
    return StrictCharField(max_length=1000, allow_blank=True, trim_whitespace=False)


def _script() -> StrictCharField:
    return StrictCharField(max_length=MAX_FILE_BYTES, allow_blank=True, trim_whitespace=False)


class TestScript(serializers.Serializer):
    __test__ = False
    file_path = _path()
    file_name = _name()
    script = _script()


class ScenarioScript(TestScript):
    tests = serializers.ListField(child=TestScript(), max_length=MAX_TESTS)


class MasterScenario(TestScript):
    scenarios = serializers.ListField(child=ScenarioScript(), max_length=MAX_FILES)


class DryRunInput(serializers.Serializer):
    machine_name = StrictCharField(max_length=255)
    timestamp = StrictCharField(max_length=64)
    master_scenario = MasterScenario()


class TestStartInput(serializers.Serializer):
    __test__ = False
    machine_name = StrictCharField(max_length=255)
    file_path = _path()
    file_name = _name()
    timestamp_start = StrictCharField(max_length=64)


class TestStopInput(serializers.Serializer):
    __test__ = False
    machine_name = StrictCharField(max_length=255)
    file_path = _path()
    file_name = _name()
    status = serializers.ChoiceField(choices=sorted(STATUS_OUTCOMES))
    timestamp_stop = StrictCharField(max_length=64)


class DryRunOutput(serializers.Serializer):
    run = serializers.IntegerField()
    case = serializers.CharField()
    planned = serializers.IntegerField()
    status = serializers.CharField()


class TestOutput(serializers.Serializer):
    __test__ = False
    run = serializers.IntegerField()
    test_id = serializers.CharField()
    status = serializers.CharField()
    run_status = serializers.CharField()
    run_outcome = serializers.CharField()


class TreeTestOutput(serializers.Serializer):
    test_id = serializers.CharField()
    file_name = serializers.CharField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    message = serializers.CharField()


class TreeScenarioOutput(serializers.Serializer):
    file_name = serializers.CharField()
    status = serializers.CharField()
    tests = TreeTestOutput(many=True)


class TreeOutput(serializers.Serializer):
    run = serializers.IntegerField()
    case = serializers.CharField()
    machine = serializers.CharField()
    status = serializers.CharField()
    outcome = serializers.CharField()
    counts = serializers.DictField(child=serializers.IntegerField())
    last_finished_at = serializers.DateTimeField(allow_null=True)
    scenarios = TreeScenarioOutput(many=True)
