from django.apps import AppConfig


class TestManagementSystemConfig(AppConfig):
    name = "test_management_system"
    verbose_name = "Test management system"
