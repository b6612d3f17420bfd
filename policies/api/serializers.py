from rest_framework import serializers

from gateway_admin.api.serializers import StrictFieldsMixin

from ..choices import PolicyFormatChoices

__all__ = ("PolicySerializer",)


class PolicySerializer(StrictFieldsMixin, serializers.Serializer):
    """`{"format": "xml", "value": "<policies>…</policies>"}`"""

    format = serializers.ChoiceField(choices=PolicyFormatChoices, default=PolicyFormatChoices.XML)
    value = serializers.CharField(trim_whitespace=False, help_text="The <policies> XML document.")
