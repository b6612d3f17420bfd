from django.contrib import admin

from gateway_admin.admin import SnapshotSafeAdmin

from .models import API, Operation


class OperationInline(admin.TabularInline):
    model = Operation
    fields = ("name", "display_name", "method", "url_template")
    extra = 0


@admin.register(API)
class APIAdmin(SnapshotSafeAdmin):
    list_display = ("name", "display_name", "path", "api_type", "subscription_required", "last_updated")
    list_filter = ("api_type",)
    search_fields = ("name", "display_name", "path")
    inlines = (OperationInline,)
