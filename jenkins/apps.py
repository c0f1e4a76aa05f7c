from django.apps import AppConfig


class JenkinsConfig(AppConfig):
    name = "jenkins"
    verbose_name = "Jenkins"
