from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated

# The schema and its Swagger UI show no data, only the API's shape: any logged-in user may read them (log in at
# /admin/ to use the Swagger UI).
urlpatterns = [
    # The web UI (docs/web-ui.md); the site root leads there.
    path("", RedirectView.as_view(pattern_name="webui:index", permanent=False)),
    path("ui/", include("webui.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[IsAuthenticated]),
        name="api-docs",
    ),
    path("api/", include("gateway_admin.api_router")),
]
