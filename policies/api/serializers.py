from rest_framework import serializers

from gateway_admin.api.serializers import StrictFieldsMixin

from ..choices import PolicyContentFormatChoices

__all__ = ("PolicySerializer",)


class PolicySerializer(StrictFieldsMixin, serializers.Serializer):
    """`{"format": "xml" | "rawxml", "value": "<policies>…</policies>"}`"""

    format = serializers.ChoiceField(choices=PolicyContentFormatChoices, default=PolicyContentFormatChoices.XML)
    value = serializers.CharField(
        trim_whitespace=False,
        help_text=(
            "The <policies> document. `xml`: well-formed XML (quotes inside expressions escaped as &quot;); "
            '`rawxml`: expressions as the APIM portal writes them (condition="@(x["k"] == "v")"). '
            "Documents are stored as `xml`; GET `?format=rawxml` returns the raw form."
        ),
    )
