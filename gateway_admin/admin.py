from django.contrib import admin, messages
from django.http import HttpResponseRedirect

from .models import ConfigRevision, GatewayHeartbeat, RevealRecord
from .safety import MSG_BREAKS, ConfigRejected, validated_write


@admin.register(ConfigRevision)
class ConfigRevisionAdmin(admin.ModelAdmin):
    list_display = ("revision",)
    readonly_fields = ("revision",)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the system only (audit records, usage rollups): the admin shows them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RevealRecord)
class RevealRecordAdmin(ReadOnlyAdmin):
    """The audit log of reveals: read only, here as anywhere else."""

    list_display = ("created", "username", "kind", "name", "channel")
    list_filter = ("kind", "channel")
    search_fields = ("username", "name")


@admin.register(GatewayHeartbeat)
class GatewayHeartbeatAdmin(ReadOnlyAdmin):
    """What each gateway last reported. A gateway that is gone for good can be deleted (it comes back if it reports
    again)."""

    list_display = ("gateway_id", "region", "revision", "status", "last_seen")
    search_fields = ("gateway_id",)

    def has_delete_permission(self, request, obj=None):
        return admin.ModelAdmin.has_delete_permission(self, request, obj)


class SnapshotSafeAdmin(admin.ModelAdmin):
    """A ModelAdmin whose writes (add, change, delete, bulk actions, list edits) commit only if gateways can load the
    resulting snapshot (gateway_admin.safety). A refused write is rolled back and the page says why."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return self._checked(request, super().changeform_view, request, object_id, form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        return self._checked(request, super().delete_view, request, object_id, extra_context)

    def changelist_view(self, request, extra_context=None):
        return self._checked(request, super().changelist_view, request, extra_context)

    def _checked(self, request, view, *args):
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return view(*args)
        try:
            with validated_write():
                return view(*args)
        except ConfigRejected as exc:
            for problem in exc.problems:
                self.message_user(request, MSG_BREAKS.format(message=problem.message), level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
