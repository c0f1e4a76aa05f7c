from test_runner.ingest.urls import legacy_urlpatterns as urlpatterns

__all__ = ["urlpatterns"]
