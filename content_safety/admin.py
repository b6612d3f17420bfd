from django.contrib import admin

from .models import Blocklist


@admin.register(Blocklist)
class BlocklistAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "last_updated")
    search_fields = ("name",)
