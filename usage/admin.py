from django.contrib import admin

from .models import UsageRollup


@admin.register(UsageRollup)
class UsageRollupAdmin(admin.ModelAdmin):
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

    # Rollups are written by the ingestion only; the admin shows them.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
