from django.apps import AppConfig


class WebConfig(AppConfig):
    """The web pages' template filters (an app of its own so that templates can load them)."""

    name = "test_runner.web"
    label = "test_runner_web"
    verbose_name = "Web pages"
