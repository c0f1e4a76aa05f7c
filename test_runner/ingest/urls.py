from django.urls import path

from test_runner.ingest import apis

# Under /api/v1/.
urlpatterns = [
    path("ingest/dry-run/", apis.DryRunApi.as_view(), name="ingest-dry-run"),
    path("ingest/test-start/", apis.TestStartApi.as_view(), name="ingest-test-start"),
    path("ingest/test-stop/", apis.TestStopApi.as_view(), name="ingest-test-stop"),
    path("ingest/runs/<int:pk>/tree/", apis.RunTreeApi.as_view(), name="ingest-run-tree"),
]

# At the site root: the paths existing suites already post to.
legacy_urlpatterns = [
    path("tm_api/dry_run/", apis.LegacyDryRunApi.as_view(), name="ingest-legacy-dry-run"),
    path("tm_api/test_start/", apis.LegacyTestStartApi.as_view(), name="ingest-legacy-test-start"),
    path("tm_api/test_stop/", apis.LegacyTestStopApi.as_view(), name="ingest-legacy-test-stop"),
]
