from django.contrib import admin

from gateway_admin.admin import SnapshotSafeAdmin

from .models import Policy


@admin.register(Policy)
class PolicyAdmin(SnapshotSafeAdmin):
    list_display = ("__str__", "scope", "format", "last_updated")
    list_filter = ("scope",)
    # Documents are validated by the REST API (policies.services.set_policy); the admin only shows them.
    readonly_fields = ("scope", "product", "api", "operation", "format", "value", "created", "last_updated")

    def has_add_permission(self, request):
        return False
