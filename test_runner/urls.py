from django.urls import path

from test_runner import apis

urlpatterns = [
    path("test-cases/", apis.CaseListApi.as_view(), name="case-list"),
    path("test-cases/<int:pk>/", apis.CaseDetailApi.as_view(), name="case-detail"),
    path("test-cases/<int:pk>/versions/", apis.CaseVersionsApi.as_view(), name="case-versions"),
    path("runs/", apis.RunListApi.as_view(), name="run-list"),
    path("runs/<int:pk>/", apis.RunDetailApi.as_view(), name="run-detail"),
    path("runs/<int:pk>/events/", apis.RunEventsApi.as_view(), name="run-events"),
    path("runs/<int:pk>/log", apis.RunLogApi.as_view(), name="run-log"),
    path("runs/<int:pk>/results/", apis.RunResultsApi.as_view(), name="run-results"),
    path("runs/<int:pk>/junit.xml", apis.RunJunitApi.as_view(), name="run-junit"),
    path("runs/<int:pk>/cancel/", apis.RunCancelApi.as_view(), name="run-cancel"),
    path("runs/<int:pk>/pause/", apis.RunPauseApi.as_view(), name="run-pause"),
    path("runs/<int:pk>/resume/", apis.RunResumeApi.as_view(), name="run-resume"),
    path("runs/<int:pk>/retry/", apis.RunRetryApi.as_view(), name="run-retry"),
    path("runs/<int:pk>/artifacts/", apis.RunArtifactsApi.as_view(), name="run-artifacts"),
    path(
        "runs/<int:pk>/artifacts/<str:name>",
        apis.RunArtifactDownloadApi.as_view(),
        name="run-artifact",
    ),
]
