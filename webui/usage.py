"""The usage dashboard: requests and tokens over time by API, subscription, product or operation, the top
consumers and a CSV export. It reads the same report as `GET /api/usage/` (`usage.services.usage_report`), with the
same query parameters validated by the same serializer; the charts are drawn in the browser by plotly.js (from the
`plotly` package, served by WhiteNoise: webui/staticfiles.py)."""

import csv

from django import forms
from django.http import HttpResponse
from rest_framework.exceptions import ValidationError

from usage.api.serializers import UsageQuerySerializer
from usage.choices import UsageGroupByChoices, UsageIntervalChoices
from usage.services import INTERVAL_STEPS, usage_report, usage_series, usage_top

from .errors import add_errors, refusal_errors
from .views import UIView

__all__ = ("UsageView", "top_consumers")

TOP = 10  # rows of the top consumers table; the charts draw these keys and sum the rest as "others"
CSV_FIELDS = ("key", "period", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "avg_latency_ms",
              "cache_hits")  # fmt: skip
NONE_LABEL = "(none)"


class UsageFilterForm(forms.Form):
    """Widgets and labels only: the values are validated by UsageQuerySerializer, as for the REST API."""

    group_by = forms.ChoiceField(label="Group by", choices=UsageGroupByChoices.choices, required=False)
    interval = forms.ChoiceField(label="Interval", choices=UsageIntervalChoices.choices, required=False)
    start = forms.CharField(label="From (ISO 8601)", required=False)
    end = forms.CharField(label="To (ISO 8601)", required=False)
    api = forms.CharField(label="API", required=False)
    subscription = forms.CharField(label="Subscription", required=False)
    product = forms.CharField(label="Product", required=False)

    FIELD_NAMES = {"start": "from", "end": "to"}  # the REST API's names

    def query(self) -> dict[str, str]:
        """The non-empty values under the REST API's parameter names."""
        data = self.data
        return {self.FIELD_NAMES.get(name, name): data[name] for name in self.fields if data.get(name)}


def top_consumers(params: dict, limit: int = TOP) -> list[dict]:
    """Totals per key over the whole range, the most tokens first (then requests, then key): ranked by the
    database (`usage_top`), so a thousand keys cost no more than ten."""
    rows = usage_top(group_by=params["group_by"], start=params["start"], end=params["end"],
                     filters=params.get("filters"), limit=limit)  # fmt: skip
    return [{**row, "key": row["key"] if row["key"] is not None else NONE_LABEL, "raw_key": row["key"]} for row in rows]


def chart_series(rows: list[dict]) -> dict:
    """Per period, requests and total tokens for each key of `usage_series` rows and "others" (the rest)."""
    periods = sorted({row["period"] for row in rows})
    index = {period: i for i, period in enumerate(periods)}
    series: dict = {}
    for row in rows:
        name = "others" if row["other"] else (row["key"] if row["key"] is not None else NONE_LABEL)
        entry = series.setdefault(name, {"requests": [0] * len(periods), "tokens": [0] * len(periods)})
        entry["requests"][index[row["period"]]] += row["requests"]
        entry["tokens"][index[row["period"]]] += row["total_tokens"]
    return {"periods": [p.isoformat() for p in periods], "series": series}


class UsageView(UIView):
    template_name = "webui/usage.html"
    permission_required = ("usage.view_usagerollup",)

    def get(self, request, *args, **kwargs):
        form = UsageFilterForm({"group_by": UsageGroupByChoices.API, "interval": UsageIntervalChoices.HOUR,
                                **request.GET.dict()})  # fmt: skip
        form.is_valid()
        query = UsageQuerySerializer(data=form.query())
        if not query.is_valid():
            aliases = {rest: name for name, rest in UsageFilterForm.FIELD_NAMES.items()}
            add_errors(form, refusal_errors(ValidationError(query.errors)), aliases)
            return self.render_to_response(self.get_context_data(form=form, rows=None), status=400)
        params = query.validated_data
        if request.GET.get("format") == "csv":
            return csv_response(usage_report(**params), params)
        top = top_consumers(params)
        series = usage_series(**params, keys=[row["raw_key"] for row in top])
        context = self.get_context_data(
            form=form,
            rows=series,
            params=params,
            top=top,
            chart={
                **chart_series(series),
                "step_ms": INTERVAL_STEPS[params["interval"]].total_seconds() * 1000,
                "range": [params["start"].isoformat(), params["end"].isoformat()],
            },
            group_label=UsageGroupByChoices(params["group_by"]).label,
            csv_query=_with_csv(request.GET),
        )
        return self.render_to_response(context)


def _with_csv(query) -> str:
    copy = query.copy()
    copy["format"] = "csv"
    return copy.urlencode()


def csv_response(rows: list[dict], params: dict) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    name = f"usage-{params['group_by']}-{params['interval']}-{params['start']:%Y%m%dT%H%M}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.DictWriter(response, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "period": row["period"].isoformat(), "key": row["key"] or ""})
    return response
