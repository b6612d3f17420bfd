"""REST: the usage report (GET /api/usage/) and the gateways' ingestion endpoint (POST /api/gateway/usage/)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from usage.models import UsageRollup

from .conftest import totals
from .factories import BASE, UsageRecordFactory, UsageRollupFactory

pytestmark = pytest.mark.django_db

URL = "/api/usage/"
INGEST_URL = "/api/gateway/usage/"
RANGE = {"from": BASE.isoformat(), "to": (BASE + timedelta(days=1)).isoformat()}


def iso(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


#
# GET /api/usage/
#


@pytest.fixture
def rows():
    """Two APIs, two subscriptions (one row without), across two hours and two days."""
    UsageRollupFactory(minute=BASE, requests=2, prompt_tokens=10, completion_tokens=20, latency_ms_sum=300.0)
    UsageRollupFactory(minute=BASE + timedelta(minutes=1), cache_hit=True, latency_ms_sum=50.0)
    UsageRollupFactory(minute=BASE + timedelta(minutes=1), operation="embeddings", subscription="team-a")
    UsageRollupFactory(minute=BASE + timedelta(hours=1, minutes=5), api="vision", product="", subscription="")
    UsageRollupFactory(minute=BASE + timedelta(days=1, minutes=5), api="vision")


def test_group_by_api_per_hour(api_client, rows):
    body = api_client.get(URL, {**RANGE, "group_by": "api", "interval": "hour"}).json()
    assert body["group_by"] == "api" and body["interval"] == "hour"
    assert body["from"] == iso(BASE) and body["to"] == iso(BASE + timedelta(days=1))
    assert body["results"] == [
        {
            "key": "chat",
            "period": iso(BASE),
            "requests": 4,
            # the cache hit's tokens were saved, not spent: in tokens_saved, not in the totals
            "prompt_tokens": 20,
            "completion_tokens": 40,
            "total_tokens": 60,
            "avg_latency_ms": 112.5,
            "cache_hits": 1,
            "tokens_saved": 30,
            "blocked": 0,
            "retried_requests": 0,
            "failed_attempts": 0,
        },
        {
            "key": "vision",
            "period": iso(BASE + timedelta(hours=1)),
            "requests": 1,
            "prompt_tokens": 10,
            "completion_tokens": 20,
            "total_tokens": 30,
            "avg_latency_ms": 100.0,
            "cache_hits": 0,
            "tokens_saved": 0,
            "blocked": 0,
            "retried_requests": 0,
            "failed_attempts": 0,
        },
    ]


def test_blocked_requests_are_counted_per_group(api_client):
    UsageRollupFactory(requests=3)
    UsageRollupFactory(requests=2, status=403, block_reason="content-safety:Hate")
    UsageRollupFactory(requests=1, block_reason="content-safety:Violence")  # a stream cut after its 200
    UsageRollupFactory(api="vision", requests=4)
    results = api_client.get(URL, {**RANGE, "group_by": "api", "interval": "day"}).json()["results"]
    assert [(r["key"], r["requests"], r["blocked"]) for r in results] == [("chat", 6, 3), ("vision", 4, 0)]


def test_failed_attempts_of_retried_requests_are_counted_per_group(api_client, gateway_client):
    """From the gateways' records (through the ingestion endpoint) to the report: a retried request counts once in
    retried_requests and each failed attempt before its answer in failed_attempts, in the answering backend's row."""
    records = [
        UsageRecordFactory(backend="paygo", failed_attempts="ptu:429"),
        UsageRecordFactory(backend="paygo", failed_attempts="ptu:429 ptu2:Timeout"),
        UsageRecordFactory(backend="ptu"),
        UsageRecordFactory(backend="paygo", status=503, failed_attempts="ptu:503 paygo:BackendConnectionFailure"),
        UsageRecordFactory(api="vision"),
    ]
    response = gateway_client.post(INGEST_URL, {"records": [r.to_json() for r in records]})
    assert response.status_code == 202, response.content
    results = api_client.get(URL, {**RANGE, "group_by": "api", "interval": "day"}).json()["results"]
    assert [(r["key"], r["requests"], r["retried_requests"], r["failed_attempts"]) for r in results] == [
        ("chat", 4, 3, 5),
        ("vision", 1, 0, 0),
    ]
    rows = UsageRollup.objects.filter(api="chat").order_by("backend", "status")
    assert [(r.backend, r.status, r.requests, r.retried_requests, r.failed_attempts) for r in rows] == [
        ("paygo", 200, 2, 2, 3),
        ("paygo", 503, 1, 1, 2),
        ("ptu", 200, 1, 0, 0),
    ]
    # a re-delivered record adds nothing, failed attempts included
    assert gateway_client.post(INGEST_URL, {"records": [records[1].to_json()]}).json()["duplicates"] == 1
    again = api_client.get(URL, {**RANGE, "group_by": "api", "interval": "day"}).json()["results"]
    assert (again[0]["retried_requests"], again[0]["failed_attempts"]) == (3, 5)


def test_group_by_subscription_per_minute(api_client, rows):
    results = api_client.get(URL, {**RANGE, "group_by": "subscription", "interval": "minute"}).json()["results"]
    assert [(r["key"], r["period"], r["requests"]) for r in results] == [
        ("master", iso(BASE), 2),
        ("master", iso(BASE + timedelta(minutes=1)), 1),
        ("team-a", iso(BASE + timedelta(minutes=1)), 1),
        (None, iso(BASE + timedelta(hours=1, minutes=5)), 1),
    ]


def test_group_by_product_per_day(api_client, rows):
    params = {"from": BASE.isoformat(), "to": (BASE + timedelta(days=2)).isoformat()}
    results = api_client.get(URL, {**params, "group_by": "product", "interval": "day"}).json()["results"]

    # BASE follows the clock, so the row at +1h05 falls on the next day when BASE is 23:00
    def day(offset: timedelta) -> str:
        return iso((BASE + offset).replace(hour=0, minute=0))

    expected = [
        ("starter", day(timedelta(0)), 4),
        (None, day(timedelta(hours=1, minutes=5)), 1),
        ("starter", day(timedelta(days=1, minutes=5)), 1),
    ]
    expected.sort(key=lambda row: (row[1], row[0] or ""))  # the report orders by period, then key
    assert [(r["key"], r["period"], r["requests"]) for r in results] == expected


def test_group_by_operation_keys_by_api_and_operation(api_client, rows):
    results = api_client.get(URL, {**RANGE, "group_by": "operation", "interval": "day"}).json()["results"]
    assert {r["key"]: r["requests"] for r in results} == {
        "chat/chat-completions": 3,
        "chat/embeddings": 1,
        "vision/chat-completions": 1,
    }


def test_filters_and_half_open_range(api_client, rows):
    params = {"from": BASE.isoformat(), "to": (BASE + timedelta(minutes=1)).isoformat(), "api": "chat"}
    results = api_client.get(URL, {**params, "interval": "minute"}).json()["results"]
    assert [(r["key"], r["requests"]) for r in results] == [("chat", 2)]
    results = api_client.get(URL, {**RANGE, "subscription": "team-a"}).json()["results"]
    assert [(r["key"], r["requests"]) for r in results] == [("chat", 1)]


def test_defaults_are_the_last_24_hours_per_hour_by_api(api_client):
    now = timezone.now()
    UsageRollupFactory(minute=now - timedelta(hours=1))
    UsageRollupFactory(minute=now - timedelta(hours=25))
    body = api_client.get(URL).json()
    assert (body["group_by"], body["interval"]) == ("api", "hour")
    assert sum(r["requests"] for r in body["results"]) == 1


def test_no_usage_is_an_empty_list(api_client):
    assert api_client.get(URL, RANGE).json()["results"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "model"}, "group_by"),
        ({"interval": "week"}, "interval"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01T00:00:00Z"}, "to"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-15T00:00:00Z", "interval": "minute"}, "interval"),
    ],
)
def test_bad_parameters_are_400_naming_them(api_client, params, field):
    response = api_client.get(URL, params)
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_report_needs_an_administrator(anon_client, django_user_model):
    assert anon_client.get(URL).status_code in (401, 403)
    anon_client.force_authenticate(django_user_model.objects.create_user("viewer", password="viewer-password"))
    assert anon_client.get(URL).status_code == 403


def test_schema_documents_the_report_but_not_the_ingestion(api_client):
    schema = api_client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/usage/"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"group_by", "from", "to", "interval"}
    assert INGEST_URL not in schema["paths"]


#
# POST /api/gateway/usage/
#


@pytest.fixture
def no_ingestion(monkeypatch):
    """Fails the test if the request reaches the ingestion service. (After an error answer the database cannot be
    asked: DRF marks the test's enclosing transaction for rollback.)"""

    def ingest_records(records, **options):
        raise AssertionError("ingest_records() was called")

    monkeypatch.setattr("usage.api.views.ingest_records", ingest_records)


def test_ingest_counts_and_answers_202(gateway_client):
    records = UsageRecordFactory.build_batch(3)
    response = gateway_client.post(INGEST_URL, {"records": [r.to_json() for r in records]})
    assert response.status_code == 202
    assert response.json() == {"received": 3, "counted": 3, "duplicates": 0, "expired": 0, "invalid": 0}
    assert totals()["requests"] == 3


def test_a_retried_post_is_counted_once(gateway_client):
    body = {"records": [r.to_json() for r in UsageRecordFactory.build_batch(2)]}
    assert gateway_client.post(INGEST_URL, body).status_code == 202
    retry = gateway_client.post(INGEST_URL, body)
    assert retry.status_code == 202
    assert (retry.json()["counted"], retry.json()["duplicates"]) == (0, 2)
    assert totals()["requests"] == 2


def test_an_empty_batch_is_fine(gateway_client):
    assert gateway_client.post(INGEST_URL, {"records": []}).status_code == 202


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, {"records": ["This field is required."]}),
        ({"records": "x"}, {"records": ['Expected a list of items but got type "str".']}),
        (
            {"records": [{**UsageRecordFactory().to_json(), "status": "ok"}]},
            {"records": {"0": {"status": ["A valid integer is required."]}}},
        ),
        (
            {"records": [UsageRecordFactory().to_json(), {**UsageRecordFactory().to_json(), "request_id": "r-1"}]},
            {"records": {"1": {"request_id": ["Must be a GUID."]}}},
        ),
        (  # the one-pass reading once took it as it was (a `$` in the id's pattern matched before the newline)
            {"records": [{**UsageRecordFactory().to_json(), "request_id": "01234567-89ab-cdef-0123-456789abcdef\n"}]},
            {"records": {"0": {"request_id": ["Must be a GUID."]}}},
        ),
    ],
)
def test_bad_records_are_400_naming_the_field_and_nothing_is_counted(gateway_client, no_ingestion, body, error):
    response = gateway_client.post(INGEST_URL, body)
    assert response.status_code == 400
    assert response.json() == error


@pytest.mark.parametrize("header", [None, "Gateway wrong", "Bearer test-gateway-token"])
def test_ingest_needs_the_gateway_token(anon_client, no_ingestion, header):
    if header:
        anon_client.credentials(HTTP_AUTHORIZATION=header)
    response = anon_client.post(INGEST_URL, {"records": [UsageRecordFactory().to_json()]})
    assert response.status_code == 401


def test_an_admin_session_is_not_a_gateway(anon_client, admin_user):
    anon_client.force_login(admin_user)
    assert anon_client.post(INGEST_URL, {"records": []}).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_the_answer_comes_after_the_commit(gateway_client):
    response = gateway_client.post(INGEST_URL, {"records": [UsageRecordFactory().to_json()]})
    assert response.status_code == 202
    assert not connection.in_atomic_block
    assert UsageRollup.objects.get().requests == 1
