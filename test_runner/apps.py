from django.apps import AppConfig


class TestRunnerConfig(AppConfig):
    name = "test_runner"
    verbose_name = "Test cases and runs"
