"""The home page and the heartbeat endpoint behind it (Django test client): gateways seen with their revision and
health, recent errors, the first-run checklist, permissions and query counts."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from gateway_admin.models import ConfigRevision, GatewayHeartbeat
from tests.management.factories import APIFactory, SubscriptionFactory
from usage.models import UsageRollup

from .conftest import page_queries

pytestmark = pytest.mark.django_db

HEARTBEAT = "/api/gateway/heartbeat/"
AUTH = {"HTTP_AUTHORIZATION": "Gateway test-gateway-token"}
HOME = reverse("webui:index")


def beat(client: Client, **fields):
    body = {"gateway_id": "gw-1", "revision": ConfigRevision.current(), "status": "ok", "interval": 15, **fields}
    return client.post(HEARTBEAT, body, content_type="application/json", **AUTH)


def error_rollup(api: str, status: int, minutes_ago: int = 5):
    return UsageRollup.objects.create(
        minute=datetime.now(UTC) - timedelta(minutes=minutes_ago),
        api=api,
        operation="chat",
        status=status,
        cache_hit=False,
        requests=3,
    )


def test_heartbeat_needs_the_gateway_token_and_a_valid_body():
    client = Client()
    assert client.post(HEARTBEAT, {}, content_type="application/json").status_code in (401, 403)
    answer = beat(client, status="fine", revision="x")
    assert answer.status_code == 400
    assert set(answer.json()) == {"status", "revision"}
    assert not GatewayHeartbeat.objects.exists()


def test_heartbeat_is_stored_in_place():
    client = Client()
    assert beat(client, region="eu").status_code == 204
    rejected = {"revision": 9, "reason": "bad"}
    assert beat(client, status="degraded", rejected=rejected, quarantined=[{"kind": "api"}]).status_code == 204
    gateway = GatewayHeartbeat.objects.get()
    assert (gateway.gateway_id, gateway.status, gateway.region) == ("gw-1", "degraded", "")
    assert gateway.problems == {"rejected": rejected, "quarantined": [{"kind": "api"}]}


def test_home_shows_gateways_health_and_staleness(reader_client):
    client = Client()
    beat(client, gateway_id="gw-current")
    beat(client, gateway_id="gw-behind", revision=0, status="degraded", rejected={"revision": 5, "reason": "bad xml"})
    beat(client, gateway_id="gw-gone")
    GatewayHeartbeat.objects.filter(gateway_id="gw-gone").update(last_seen=datetime.now(UTC) - timedelta(minutes=5))
    ConfigRevision.bump()
    beat(client, gateway_id="gw-current")
    html = reader_client.get(HOME).content.decode()
    row = {gid: html.split(f">{gid}</th>")[1].split("</tr>")[0] for gid in ("gw-current", "gw-behind", "gw-gone")}
    assert "(behind)" not in row["gw-current"] and ">ok<" in row["gw-current"]
    assert "(behind)" in row["gw-behind"] and "refused revision 5: bad xml" in row["gw-behind"]
    assert "not reporting" in row["gw-gone"]


def test_home_without_gateways_says_how_they_report(reader_client):
    assert "No gateway has reported yet" in reader_client.get(HOME).content.decode()


def test_recent_errors_need_the_usage_permission(reader_client, django_user_model):
    error_rollup("chat", 503)
    error_rollup("chat", 200)
    error_rollup("old", 500, minutes_ago=60 * 25)
    errors = reader_client.get(HOME).context["errors"]
    assert [(e["api"], e["status"], e["requests"]) for e in errors] == [("chat", 503, 3)]
    nobody = Client()
    nobody.force_login(django_user_model.objects.create_user("nobody", password="x"))
    page = nobody.get(HOME)
    assert page.status_code == 200 and page.context.get("errors") is None


def test_first_run_checklist(operator_client):
    steps = operator_client.get(HOME).context["checklist"]
    assert [step["done"] for step in steps] == [False, False, False]
    assert steps[0]["url"] == reverse("webui:import") and steps[2]["url"] is None
    api = APIFactory()
    SubscriptionFactory(api=api)
    error_rollup(api.name, 200)
    page = operator_client.get(HOME)
    assert [step["done"] for step in page.context["checklist"]] == [True, True, True]
    assert page.context["first_run"] is False and "First steps" not in page.content.decode()


def test_home_queries_do_not_grow(operator_client):
    client = Client()
    beat(client, gateway_id="gw-0")
    error_rollup("api-0", 500)
    first = page_queries(operator_client, HOME)
    for i in range(1, 30):
        beat(client, gateway_id=f"gw-{i}")
        error_rollup(f"api-{i}", 500, minutes_ago=i)
    assert page_queries(operator_client, HOME) == first
