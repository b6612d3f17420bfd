from django.contrib import admin

from gateway_admin.admin import ReadOnlyAdmin

from .models import UsageRollup


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyAdmin):
    """Rollups are written by the ingestion only."""

    list_display = (
        "minute",
        "api",
        "operation",
        "subscription",
        "product",
        "backend",
        "model",
        "status",
        "cache_hit",
        "requests",
        "total_tokens",
    )
    list_filter = ("cache_hit", "status")
    search_fields = ("api", "operation", "subscription", "product", "model")
    date_hierarchy = "minute"
