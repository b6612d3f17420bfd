from django.contrib import admin

from .models import Policy


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "scope", "format", "last_updated")
    list_filter = ("scope",)
    # Documents are validated by the REST API (policies.services.set_policy); the admin only shows them.
    readonly_fields = ("scope", "product", "api", "operation", "format", "value", "created", "last_updated")

    def has_add_permission(self, request):
        return False
