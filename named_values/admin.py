from django import forms
from django.contrib import admin

from gateway_admin.admin import SnapshotSafeAdmin

from .models import NamedValue


class NamedValueForm(forms.ModelForm):
    new_value = forms.CharField(
        label="Value",
        required=False,
        strip=False,
        max_length=NamedValue.MAX_VALUE_LENGTH,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current value.",
    )

    class Meta:
        model = NamedValue
        fields = ("name", "secret", "tags")

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not (cleaned.get("new_value") or "").strip():
            self.add_error("new_value", "A value is required.")
        return cleaned


@admin.register(NamedValue)
class NamedValueAdmin(SnapshotSafeAdmin):
    form = NamedValueForm
    list_display = ("name", "secret", "shown_value", "last_updated")
    list_filter = ("secret",)
    search_fields = ("name",)

    @admin.display(description="value")
    def shown_value(self, obj):
        return "••••••••" if obj.secret else obj.plain_value

    def save_model(self, request, obj, form, change):
        new_value = form.cleaned_data.get("new_value")
        if new_value:
            obj.set_value(new_value)
        elif change and "secret" in form.changed_data:
            original = NamedValue.objects.get(pk=obj.pk)
            obj.set_value(original.value)
        super().save_model(request, obj, form, change)
