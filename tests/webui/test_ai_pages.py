"""The pages of the AI policies' objects (Django test client): blocklists through their REST serializer (RE2 errors
on the box and line), and a backend's type, pool members, circuit-breaker rule and state as
GET /api/backends/{name}/state/ reports it."""

import pytest
from django.urls import reverse

from content_safety.models import Blocklist
from tests.management.factories import BackendFactory, BlocklistFactory

from .test_home import beat

pytestmark = pytest.mark.django_db

NEW = reverse("webui:object-create", kwargs={"kind": "blocklists"})
BREAKER = {
    "rules": [
        {
            "name": "trip-on-429",
            "failureCondition": {"count": 1, "interval": "PT1M", "statusCodeRanges": [{"min": 429, "max": 429}]},
            "tripDuration": "PT30S",
            "acceptRetryAfter": True,
        }
    ]
}


def test_blocklist_created_edited_and_deleted(operator_client):
    response = operator_client.post(
        NEW, {"name": "words", "description": "d", "terms": "darn\r\n\r\nheck", "regexes": "fo+bar"}
    )
    assert response.status_code == 302, response.context and response.context["form"].errors
    blocklist = Blocklist.objects.get(name="words")
    assert blocklist.items == [
        {"kind": "term", "value": "darn"},
        {"kind": "term", "value": "heck"},
        {"kind": "regex", "value": "fo+bar"},
    ]
    detail = operator_client.get(response.url).content.decode()
    assert "darn, heck" in detail and "fo+bar" in detail
    edit = reverse("webui:object-edit", kwargs={"kind": "blocklists", "name": "words"})
    assert operator_client.get(edit).context["form"].initial["terms"] == "darn\nheck"
    assert operator_client.post(edit, {"description": "", "terms": "gosh", "regexes": ""}).status_code == 302
    blocklist.refresh_from_db()
    assert blocklist.items == [{"kind": "term", "value": "gosh"}]
    delete = reverse("webui:object-delete", kwargs={"kind": "blocklists", "name": "words"})
    assert operator_client.post(delete).status_code == 302
    assert not Blocklist.objects.exists()


def test_a_bad_regex_is_shown_on_its_box_and_line(operator_client):
    response = operator_client.post(NEW, {"name": "bad", "terms": "", "regexes": "ok\n(a)\\1\n[z-a]"})
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == ["regexes"]
    assert [message.split(":")[0] for message in errors["regexes"]] == ["Line 2", "Line 3"]
    assert not Blocklist.objects.exists()
    response = operator_client.post(NEW, {"name": "bad name", "terms": "a", "regexes": ""})
    assert "name" in response.context["form"].errors


def test_a_blocklist_a_policy_names_is_not_deleted(operator_client):
    from policies.services import set_policy

    BlocklistFactory(name="words")
    xml = (
        '<policies><inbound><base /><llm-content-safety backend-id="builtin"><blocklists><id>words</id></blocklists>'
        "</llm-content-safety></inbound><backend><base /></backend><outbound><base /></outbound>"
        "<on-error><base /></on-error></policies>"
    )
    set_policy("global", None, xml)
    response = operator_client.post(reverse("webui:object-delete", kwargs={"kind": "blocklists", "name": "words"}))
    assert response.status_code == 302
    assert Blocklist.objects.filter(name="words").exists()


def test_backend_page_shows_pool_members_breaker_rule_and_state(operator_client, client):
    BackendFactory(name="ptu", circuit_breaker=BREAKER)
    BackendFactory(name="paygo")
    BackendFactory(
        name="pool",
        type="Pool",
        url="",
        pool={"services": [{"backend": "ptu", "priority": 1}, {"backend": "paygo", "priority": 2, "weight": 3}]},
    )
    beat(client, gateway_id="gw-1", backends={"ptu": {"state": "open", "retry_after": 12}})
    response = operator_client.get(reverse("webui:object-detail", kwargs={"kind": "backends", "name": "pool"}))
    html = response.content.decode()
    assert response.context["breaker_state"]["state"] == "degraded"
    assert "ptu (priority 1, weight 1), paygo (priority 2, weight 3)" in html
    members = html.split("<caption>Pool members</caption>")[1].split("</table>")[0]
    assert "<td>open</td>" in members and "<td>closed</td>" in members
    response = operator_client.get(reverse("webui:object-detail", kwargs={"kind": "backends", "name": "ptu"}))
    html = response.content.decode()
    assert "trip-on-429: trips on 1 failures (status 429) within PT1M, open for PT30S (or Retry-After)" in html
    assert 'id="breaker-state">open<' in html and "gw-1" in html
