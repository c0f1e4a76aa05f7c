from django.urls import path

from machines import apis

urlpatterns = [
    path("machines/", apis.MachineListApi.as_view(), name="machine-list"),
    path("machines/<int:pk>/", apis.MachineDetailApi.as_view(), name="machine-detail"),
    path("machines/<int:pk>/check/", apis.MachineCheckApi.as_view(), name="machine-check"),
    path("machines/<int:pk>/host-key/", apis.MachineHostKeyApi.as_view(), name="machine-host-key"),
    path(
        "machines/<int:pk>/trust-host-key/",
        apis.MachineTrustHostKeyApi.as_view(),
        name="machine-trust-host-key",
    ),
    path(
        "machines/<int:pk>/maintenance/",
        apis.MachineMaintenanceApi.as_view(),
        name="machine-maintenance",
    ),
    path("machines/<int:pk>/pool/", apis.MachinePoolApi.as_view(), name="machine-pool"),
    path("boards/", apis.BoardListApi.as_view(), name="board-list"),
    path("boards/<int:pk>/", apis.BoardDetailApi.as_view(), name="board-detail"),
    path("boards/<int:pk>/lock/", apis.BoardLockApi.as_view(), name="board-lock"),
    path("venvs/", apis.VenvListApi.as_view(), name="venv-list"),
    path("venvs/<int:pk>/", apis.VenvDetailApi.as_view(), name="venv-detail"),
    path("venvs/<int:pk>/reset/", apis.VenvResetApi.as_view(), name="venv-reset"),
    path("audit/", apis.AuditListApi.as_view(), name="audit-list"),
]
