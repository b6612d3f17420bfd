from django.contrib import admin

from gateway_admin.admin import SnapshotSafeAdmin

from .models import Product, Subscription


@admin.register(Product)
class ProductAdmin(SnapshotSafeAdmin):
    list_display = ("name", "display_name", "state", "subscription_required", "last_updated")
    list_filter = ("state",)
    search_fields = ("name", "display_name")
    filter_horizontal = ("apis",)


@admin.register(Subscription)
class SubscriptionAdmin(SnapshotSafeAdmin):
    list_display = ("name", "display_name", "scope", "state", "last_updated")
    list_filter = ("state",)
    search_fields = ("name", "display_name")
    # Keys are created and rotated through the REST API; the admin never shows them, not even encrypted.
    fields = ("name", "display_name", "api", "product", "state", "created", "last_updated")
    readonly_fields = ("created", "last_updated")

    def has_add_permission(self, request):
        return False
