from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from gateway.usage.record import RecordError, UsageRecord

from ..choices import UsageGroupByChoices, UsageIntervalChoices
from ..services import INTERVAL_STEPS

__all__ = (
    "MAX_PERIODS",
    "MAX_RECORDS_PER_POST",
    "UsageBatchSerializer",
    "UsageQuerySerializer",
    "UsageReportSerializer",
    "UsageRowSerializer",
)

DEFAULT_RANGE = timedelta(hours=24)
# Caps the size of an answer: a week of minutes, over a year of hours.
MAX_PERIODS = 10_080
ERR_EMPTY = "Leave the parameter out rather than empty."
# The request body limit (DATA_UPLOAD_MAX_MEMORY_SIZE) binds first; gateways send 500 at a time.
MAX_RECORDS_PER_POST = 10_000


#
# Gateway ingestion (POST /api/gateway/usage/)
#


class UsageRecordField(serializers.Field):
    """One usage record as a gateway sends it; validated by `UsageRecord.from_json` of gateway.usage.record."""

    def to_internal_value(self, data):
        try:
            return UsageRecord.from_json(data)
        except RecordError as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from exc

    def to_representation(self, value):
        return value.to_json()


class UsageRecordListField(serializers.ListField):
    """A list of usage records. Each one is read by `UsageRecord.from_json` directly rather than through the child
    field's `run_validation` (a batch holds thousands; the child has no validators), with the same errors."""

    def run_child_validation(self, data):
        records, errors = [], {}
        for index, item in enumerate(data):
            try:
                records.append(UsageRecord.from_json(item))
            except RecordError as exc:
                errors[index] = {exc.field: [exc.message]}
        if errors:
            raise serializers.ValidationError(errors)
        return records


class UsageBatchSerializer(serializers.Serializer):
    """`{"records": [...]}`; an error names the record's index and field: `{"records": {"3": {"status": [...]}}}`."""

    records = UsageRecordListField(child=UsageRecordField(), max_length=MAX_RECORDS_PER_POST)


#
# Usage report (GET /api/usage/)
#


class UsageQuerySerializer(serializers.Serializer):
    """Query parameters of the usage report."""

    group_by = serializers.ChoiceField(choices=UsageGroupByChoices.choices, default=UsageGroupByChoices.API)
    interval = serializers.ChoiceField(choices=UsageIntervalChoices.choices, default=UsageIntervalChoices.HOUR)
    api = serializers.CharField(required=False, help_text="Only this API.")
    operation = serializers.CharField(required=False, help_text="Only operations of this name.")
    subscription = serializers.CharField(required=False, help_text="Only this subscription.")
    product = serializers.CharField(required=False, help_text="Only this product.")

    def get_fields(self):
        # `from` is a Python keyword, so these two cannot be declared as class attributes.
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(
            required=False, help_text="ISO 8601 start (inclusive, minute precision); default: 24 h before `to`."
        )
        fields["to"] = serializers.DateTimeField(required=False, help_text="ISO 8601 end (exclusive); default: now.")
        return fields

    def validate(self, attrs):
        # DRF reads an empty query parameter as an absent one; the schema promises a value.
        empty = {name: [ERR_EMPTY] for name in self.fields if self.initial_data.get(name) == ""}
        if empty:
            raise serializers.ValidationError(empty)
        end = attrs.pop("to", None) or timezone.now()
        start = attrs.pop("from", None) or end - DEFAULT_RANGE
        if start >= end:
            raise serializers.ValidationError({"to": ["Must be later than from."]})
        periods = (end - start) / INTERVAL_STEPS[attrs["interval"]]
        if periods > MAX_PERIODS:
            raise serializers.ValidationError(
                {
                    "interval": [
                        f"The range holds {int(periods)} {attrs['interval']} periods, more than {MAX_PERIODS}: "
                        "use a longer interval or a shorter range."
                    ]
                }
            )
        filters = {name: attrs.pop(name) for name in ("api", "operation", "subscription", "product") if name in attrs}
        return {**attrs, "start": start, "end": end, "filters": filters}


class UsageRowSerializer(serializers.Serializer):
    """Totals of one group in one period."""

    key = serializers.CharField(
        allow_null=True,
        help_text="API, subscription or product name (null: requests without one), or `<api>/<operation>`.",
    )
    period = serializers.DateTimeField(help_text="Start of the period (UTC).")
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    avg_latency_ms = serializers.FloatField()
    cache_hits = serializers.IntegerField()
    tokens_saved = serializers.IntegerField(
        help_text="Tokens of the answers served from the semantic cache (not counted in the token totals)."
    )
    blocked = serializers.IntegerField(
        help_text="Requests a policy refused or whose response it cut (content safety); see the usage records' "
        "block_reason."
    )
    retried_requests = serializers.IntegerField(
        help_text="Requests answered after at least one failed forwarding attempt (the `retry` policy)."
    )
    failed_attempts = serializers.IntegerField(
        help_text="Forwarding attempts that failed before these requests' answers (a retried 429 or 5xx, a timeout, "
        "a refused connection); the usage records' failed_attempts name the backends."
    )


class UsageReportSerializer(serializers.Serializer):
    """Usage totals per period and group."""

    group_by = serializers.ChoiceField(choices=UsageGroupByChoices.choices)
    interval = serializers.ChoiceField(choices=UsageIntervalChoices.choices)
    results = UsageRowSerializer(many=True)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(source="start")
        fields["to"] = serializers.DateTimeField(source="end")
        return fields
