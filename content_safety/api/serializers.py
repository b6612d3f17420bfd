from rest_framework import serializers

from gateway.contract import BLOCKLIST_ITEM_KINDS, check_blocklist_item
from gateway_admin.api.serializers import ConfigurationModelSerializer, StrictFieldsMixin, WholeValueMixin

from ..models import Blocklist

__all__ = ("BlocklistItemSerializer", "BlocklistSerializer")


class BlocklistItemSerializer(WholeValueMixin, StrictFieldsMixin, serializers.Serializer):
    kind = serializers.ChoiceField(choices=list(BLOCKLIST_ITEM_KINDS), help_text="term (a whole word) or regex (RE2)")
    value = serializers.CharField(max_length=1000, trim_whitespace=False)

    def validate(self, attrs):
        problem = check_blocklist_item(attrs["kind"], attrs["value"])
        if problem is not None:
            raise serializers.ValidationError({"value": [problem[0].upper() + problem[1:] + "."]})
        return attrs


class BlocklistSerializer(ConfigurationModelSerializer):
    """A content-safety blocklist: exact terms and linear-time regexes (docs/content-safety.md)."""

    items = BlocklistItemSerializer(many=True, max_length=Blocklist.MAX_ITEMS, required=False)

    class Meta:
        model = Blocklist
        fields = ("name", "description", "items", "created", "last_updated")
        read_only_fields = ("created", "last_updated")

    def validate_items(self, value):
        seen = set()
        for index, item in enumerate(value):
            key = (item["kind"], item["value"])
            if key in seen:
                raise serializers.ValidationError({index: {"value": ["This item appears twice."]}})
            seen.add(key)
        return [{"kind": item["kind"], "value": item["value"]} for item in value]
