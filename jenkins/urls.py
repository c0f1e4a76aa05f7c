from django.urls import path

from jenkins import apis

urlpatterns = [
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
    path("tokens/", apis.TokenListApi.as_view(), name="token-list"),
    path("tokens/<int:pk>/", apis.TokenDetailApi.as_view(), name="token-detail"),
]
