from django.contrib import admin

from gateway_admin.admin import ReadOnlyAdmin

from .models import ROLLUP_DIMENSIONS, UsageRollup


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyAdmin):
    """Rollups are written by the ingestion only."""

    list_display = (*ROLLUP_DIMENSIONS, "requests", "total_tokens")
    list_filter = ("cache_hit", "status", "block_reason")
    search_fields = ("api", "operation", "subscription", "product", "model")
    date_hierarchy = "minute"
