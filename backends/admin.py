from django.contrib import admin

from .models import Backend


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    list_display = ("name", "url", "last_updated")
    search_fields = ("name", "url")
