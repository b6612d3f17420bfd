from django.contrib import admin

from gateway_admin.admin import SnapshotSafeAdmin

from .models import Backend


@admin.register(Backend)
class BackendAdmin(SnapshotSafeAdmin):
    list_display = ("name", "url", "last_updated")
    search_fields = ("name", "url")
