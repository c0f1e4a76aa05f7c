from django.urls import path

from jenkins import apis, views

urlpatterns = [
    path("jenkins/client.py", views.tms_client_file, name="jenkins-tms-client"),
    path("jenkins/servers/", apis.ServerListApi.as_view(), name="jenkins-server-list"),
    path("jenkins/servers/<int:pk>/", apis.ServerDetailApi.as_view(), name="jenkins-server-detail"),
    path(
        "jenkins/servers/<int:pk>/check/",
        apis.ServerCheckApi.as_view(),
        name="jenkins-server-check",
    ),
    path("jenkins/jobs/", apis.JobListApi.as_view(), name="jenkins-job-list"),
    path("jenkins/jobs/<int:pk>/", apis.JobDetailApi.as_view(), name="jenkins-job-detail"),
    path("jenkins/builds/", apis.BuildListApi.as_view(), name="jenkins-build-list"),
    path("jenkins/builds/<int:pk>/", apis.BuildDetailApi.as_view(), name="jenkins-build-detail"),
    path(
        "jenkins/builds/<int:pk>/cancel/",
        apis.BuildCancelApi.as_view(),
        name="jenkins-build-cancel",
    ),
    path(
        "jenkins/builds/<int:pk>/console/",
        apis.BuildConsoleApi.as_view(),
        name="jenkins-build-console",
    ),
    path(
        "runs/<int:pk>/jenkins-builds/", apis.RunBuildListApi.as_view(), name="run-jenkins-builds"
    ),
    path("runs/<int:pk>/callbacks/", apis.RunCallbackListApi.as_view(), name="run-callbacks"),
    path("tokens/", apis.TokenListApi.as_view(), name="token-list"),
    path("tokens/<int:pk>/", apis.TokenDetailApi.as_view(), name="token-detail"),
]
