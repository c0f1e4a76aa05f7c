from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


class MeApi(APIView):
    """Who the caller is, as the API sees them: scripts use it to check their credentials."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        email = serializers.EmailField()
        is_admin = serializers.BooleanField()

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        user = request.user
        data = {
            "id": user.pk,
            "username": user.get_username(),
            "email": getattr(user, "email", ""),
            "is_admin": bool(user.is_staff),
        }
        return Response(self.OutputSerializer(data).data)
