"""The usage dashboard (Django test client): the report as the REST API computes it, top consumers, CSV export,
filter errors on their field, permissions and query counts."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from usage.models import UsageRollup

from .conftest import page_queries

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
URL = reverse("webui:usage")


def rollup(api: str, subscription: str, tokens: int, minutes_ago: int = 5, product: str = "", requests: int = 1):
    return UsageRollup.objects.create(
        minute=NOW - timedelta(minutes=minutes_ago),
        api=api,
        operation="chat",
        subscription=subscription,
        product=product,
        status=200,
        cache_hit=False,
        requests=requests,
        prompt_tokens=tokens // 2,
        completion_tokens=tokens - tokens // 2,
        total_tokens=tokens,
    )


def test_usage_needs_the_permission(client, django_user_model):
    assert client.get(URL).status_code == 302  # to the login page
    client.force_login(django_user_model.objects.create_user("nobody", password="x"))
    assert client.get(URL).status_code == 403


def test_top_consumers_and_chart_series(reader_client):
    rollup("chat", "alice", 100, requests=2)
    rollup("chat", "alice", 50, minutes_ago=70)
    rollup("embed", "bob", 400)
    page = reader_client.get(URL, {"group_by": "api", "interval": "hour"})
    assert page.status_code == 200
    top = page.context["top"]
    assert [(row["key"], row["requests"], row["total_tokens"]) for row in top] == [("embed", 1, 400), ("chat", 3, 150)]
    chart = json.loads(
        page.content.decode().split('id="usage-chart" type="application/json">')[1].split("</script>")[0]
    )
    assert sum(chart["series"]["chat"]["tokens"]) == 150 and sum(chart["series"]["embed"]["requests"]) == 1
    assert "vendor/plotly/plotly.min.js" in page.content.decode()
    by_subscription = reader_client.get(URL, {"group_by": "subscription", "api": "chat"}).context["top"]
    assert [(row["key"], row["total_tokens"]) for row in by_subscription] == [("alice", 150)]


def test_csv_export(reader_client):
    rollup("chat", "alice", 100, product="starter")
    answer = reader_client.get(URL, {"group_by": "product", "interval": "day", "format": "csv"})
    assert answer["Content-Type"].startswith("text/csv")
    assert "attachment" in answer["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.content.decode())))
    assert [(r["key"], r["requests"], r["total_tokens"]) for r in rows] == [("starter", "1", "100")]


def test_bad_filters_show_the_rest_api_message_on_the_field(reader_client):
    start = (NOW - timedelta(days=30)).isoformat()
    page = reader_client.get(URL, {"interval": "minute", "start": start})
    assert page.status_code == 400
    assert "more than" in str(page.context["form"].errors["interval"])
    page = reader_client.get(URL, {"start": "yesterday"})
    assert page.status_code == 400 and page.context["form"].errors["start"]


def test_usage_page_queries_do_not_grow(reader_client):
    rollup("chat", "alice", 10)
    first = page_queries(reader_client, URL)
    for i in range(50):
        rollup(f"api-{i}", f"sub-{i}", 10 + i, minutes_ago=i % 30 + 1)
    assert page_queries(reader_client, URL) == first


def chart_of(page) -> dict:
    return json.loads(page.content.decode().split('id="usage-chart" type="application/json">')[1].split("</script>")[0])


def test_ten_top_consumers_drawn_and_the_rest_summed_as_others(reader_client):
    for i in range(12):  # api-00 has the most tokens
        rollup(f"api-{i:02}", "alice", 1000 - i * 10, minutes_ago=5 + i * 60)
    rollup("", "", 5)  # a request without an API (refused before routing)
    page = reader_client.get(URL, {"group_by": "api", "interval": "hour"})
    top = page.context["top"]
    assert [row["key"] for row in top] == [f"api-{i:02}" for i in range(10)]
    chart = chart_of(page)
    assert set(chart["series"]) == {*(f"api-{i:02}" for i in range(10)), "others"}
    assert sum(chart["series"]["others"]["tokens"]) == (1000 - 100) + (1000 - 110) + 5
    assert sum(sum(s["requests"]) for s in chart["series"].values()) == 13  # every request, once
    by_operation = reader_client.get(URL, {"group_by": "operation", "interval": "hour"})
    assert by_operation.context["top"][0]["key"] == "api-00/chat"
    assert sum(chart_of(by_operation)["series"]["api-00/chat"]["tokens"]) == 1000


def test_requests_without_a_key_are_one_consumer(reader_client):
    rollup("chat", "", 300)
    rollup("chat", "alice", 100)
    page = reader_client.get(URL, {"group_by": "subscription"})
    assert [(row["key"], row["total_tokens"]) for row in page.context["top"]] == [("(none)", 300), ("alice", 100)]
    assert sum(chart_of(page)["series"]["(none)"]["tokens"]) == 300


def test_cache_hits_saved_tokens_are_not_spent_and_blocked_requests_show(reader_client):
    rollup("chat", "alice", 100)
    saved = rollup("chat", "alice", 100, minutes_ago=6)
    saved.cache_hit = True  # a cache hit's rollup carries the tokens its answer saved
    saved.save()
    blocked = rollup("chat", "bob", 0, minutes_ago=7, requests=3)
    blocked.block_reason = "content-safety"
    blocked.save()
    page = reader_client.get(URL, {"group_by": "api", "interval": "hour"})
    [row] = page.context["top"]
    assert (row["requests"], row["total_tokens"], row["tokens_saved"], row["blocked"]) == (5, 100, 100, 3)
    assert sum(page.context["chart"]["series"]["chat"]["tokens"]) == 100
    assert "Saved by cache" in page.content.decode()
