"""The whole public REST surface, registered in one place."""

from django.urls import path
from rest_framework.routers import DefaultRouter

app_name = "api"

router = DefaultRouter()
# Each app's viewsets are registered here, e.g. router.register("backends", BackendViewSet).

urlpatterns = [
    *router.urls,
]
