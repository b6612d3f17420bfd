"""Content-safety blocklists (REST, validation, snapshot) and the import wizard's `content_safety` block."""

import pytest

from content_safety.models import Blocklist
from gateway.policy.builtin.llm_content_safety import LlmContentSafety
from policies.choices import PolicyScopeChoices
from policies.services import set_policy

from .factories import APIFactory, BackendFactory
from .wizard import BASE, URL, imported_policy_xml, only_step

pytestmark = pytest.mark.django_db

LISTS = "/api/blocklists/"


def create(api_client, name="words", items=None):
    items = items if items is not None else [{"kind": "term", "value": "Bomb"}, {"kind": "regex", "value": "k+i+l+"}]
    return api_client.post(LISTS, {"name": name, "items": items}, format="json")


def test_a_blocklist_is_created_read_and_in_the_snapshot(api_client):
    from gateway_admin.snapshot import build_snapshot

    assert create(api_client).status_code == 201
    listed = api_client.get(LISTS).json()
    assert [b["name"] for b in listed] == ["words"]
    assert api_client.get(LISTS + "words/").json()["items"][0] == {"kind": "term", "value": "Bomb"}
    snapshot = build_snapshot("token")
    assert snapshot["blocklists"] == [{"name": "words", "items": Blocklist.objects.get().items}]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"kind": "regex", "value": "(a)\\1"}], "not a linear-time (RE2) regular expression"),
        ([{"kind": "regex", "value": "(?=x)y"}], "not a linear-time (RE2) regular expression"),
        ([{"kind": "regex", "value": "a*"}], "matches the empty text"),
        ([{"kind": "term", "value": "   "}], "must not be blank"),
        ([{"kind": "phrase", "value": "x"}], "is not a valid choice"),
        ([{"kind": "term", "value": "x", "extra": 1}], "extra"),
        ([{"kind": "term", "value": "x"}, {"kind": "term", "value": "x"}], "appears twice"),
    ],
)
def test_bad_items_are_refused_with_a_400_naming_them(api_client, items, message):
    response = create(api_client, items=items)
    assert response.status_code == 400
    assert "items" in response.json()
    assert message.lower() in str(response.json()["items"]).lower()
    assert not Blocklist.objects.exists()


@pytest.mark.parametrize("item", [{"value": "x"}, {"kind": "term"}, {}])
def test_a_patch_names_an_items_missing_field(api_client, item):
    """A PATCH is partial for the blocklist, not for an item (the REST fuzz found a KeyError, a 500, here)."""
    create(api_client)
    response = api_client.patch(LISTS + "words/", {"items": [item]}, format="json")
    assert response.status_code == 400
    missing = {"kind", "value"} - set(item)
    assert response.json() == {"items": {"0": {name: ["This field is required."] for name in sorted(missing)}}}
    assert create(api_client, name="other", items=[item]).json()["items"] == response.json()["items"]
    assert Blocklist.objects.get().items[0] == {"kind": "term", "value": "Bomb"}


def test_a_blocklist_a_policy_uses_cannot_be_deleted(api_client):
    create(api_client)
    api = APIFactory(name="chat")
    document = (
        '<policies><inbound><base/><llm-content-safety backend-id="builtin"><blocklists><id>words</id></blocklists>'
        "</llm-content-safety></inbound><backend><base/></backend><outbound><base/></outbound>"
        "<on-error><base/></on-error></policies>"
    )
    set_policy(PolicyScopeChoices.API, api, document)
    response = api_client.delete(LISTS + "words/")
    assert response.status_code == 409
    assert "words" in response.json()["detail"]
    assert Blocklist.objects.filter(name="words").exists()


def test_the_wizard_writes_the_policy(api_client):
    BackendFactory(name="content-safety", url="https://cs.cognitiveservices.azure.com")
    block = {
        "backend": "content-safety",
        "shield_prompt": True,
        "categories": {"Hate": 4, "Violence": 2},
        "blocklists": ["remote-list"],
        "enforce_on_completions": True,
    }
    value = imported_policy_xml(api_client, content_safety=block)
    assert (
        '<llm-content-safety backend-id="content-safety" shield-prompt="true" enforce-on-completions="true">'
        '<categories output-type="EightSeverityLevels"><category name="Hate" threshold="4"/>'
        '<category name="Violence" threshold="2"/></categories><blocklists><id>remote-list</id></blocklists>'
        "</llm-content-safety>"
    ) in value
    step = only_step(value, LlmContentSafety)
    assert step.thresholds == {"Hate": 4, "Violence": 2}
    assert step.blocklist_ids == ("remote-list",)


def test_the_wizard_with_the_builtin_engine(api_client):
    create(api_client)
    value = imported_policy_xml(api_client, content_safety={"backend": "builtin", "blocklists": ["words"]})
    step = only_step(value, LlmContentSafety)
    assert step.backend_id == "builtin"
    assert step.blocklist_ids == ("words",)


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"backend": "nowhere"}, "backend"),
        ({"backend": "builtin", "blocklists": ["missing"]}, "blocklists"),
        ({"backend": "builtin"}, "blocklists"),
        ({"backend": "builtin", "blocklists": ["words"], "categories": {"Hate": 2}}, "categories"),
        ({"backend": "builtin", "blocklists": ["words"], "shield_prompt": True}, "shield_prompt"),
        ({"backend": "cs", "categories": {"Gore": 2}}, "categories"),
        ({"backend": "cs", "categories": {"Hate": 8}}, "categories"),
        ({"backend": "cs", "blocklists": ["a", "a"]}, "blocklists"),
        ({"backend": "cs", "colour": "red"}, "colour"),
    ],
)
def test_the_wizard_refuses_a_bad_block_naming_the_field(api_client, block, field):
    create(api_client)
    BackendFactory(name="cs", url="https://cs.cognitiveservices.azure.com")
    response = api_client.post(URL, {**BASE, "content_safety": block}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["content_safety"]
