"""Policy documents at every scope: GET/PUT/DELETE, validation with positions, XML bombs, references."""

import pytest

from policies.models import Policy
from policies.services import DEFAULT_GLOBAL_POLICY

from .factories import APIFactory, BackendFactory, NamedValueFactory, OperationFactory, ProductFactory

pytestmark = pytest.mark.django_db

DOCUMENT = (
    "<policies>\n"
    '  <inbound><base/><set-header name="x-team" exists-action="override"><value>a</value></set-header></inbound>\n'
    "  <backend><base/></backend>\n"
    "  <outbound><base/></outbound>\n"
    "  <on-error><base/></on-error>\n"
    "</policies>"
)

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<policies><inbound><set-header name="x" exists-action="override"><value>&lol4;</value></set-header>
</inbound></policies>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE policies [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<policies><inbound><set-header name="x" exists-action="override"><value>&xxe;</value></set-header>
</inbound></policies>"""


@pytest.fixture
def scopes():
    """URL of each scope's policy endpoint."""
    api = APIFactory(name="gemini")
    OperationFactory(api=api, name="chat")
    ProductFactory(name="starter")
    return {
        "product": "/api/products/starter/policy/",
        "api": "/api/apis/gemini/policy/",
        "operation": "/api/apis/gemini/operations/chat/policy/",
    }


@pytest.mark.parametrize("scope", ["product", "api", "operation"])
def test_policy_lifecycle(api_client, scopes, scope):
    url = scopes[scope]
    assert api_client.get(url).status_code == 404
    response = api_client.put(url, {"format": "xml", "value": DOCUMENT})
    assert response.status_code == 201, response.content
    assert response.json() == {"format": "xml", "value": DOCUMENT}
    assert api_client.get(url).json() == {"format": "xml", "value": DOCUMENT}
    assert Policy.objects.get().scope == scope
    assert api_client.put(url, {"value": DOCUMENT.replace("x-team", "x-other")}).status_code == 200
    assert "x-other" in Policy.objects.get().value
    assert api_client.delete(url).status_code == 204
    assert api_client.delete(url).status_code == 404
    assert not Policy.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "/api/products/nope/policy/",
        "/api/apis/nope/policy/",
        "/api/apis/nope/operations/chat/policy/",
        "/api/apis/gemini/operations/nope/policy/",
    ],
)
def test_policy_of_unknown_owner_is_404(api_client, scopes, url):
    assert api_client.get(url).status_code == 404
    assert api_client.put(url, {"value": DOCUMENT}).status_code == 404


def test_global_policy_defaults_and_put(api_client):
    assert api_client.get("/api/policies/global/").json() == {"format": "xml", "value": DEFAULT_GLOBAL_POLICY}
    document = "<policies><inbound/><backend><forward-request/></backend><outbound/><on-error/></policies>"
    assert api_client.put("/api/policies/global/", {"format": "xml", "value": document}).status_code == 201
    assert api_client.put("/api/policies/global/", {"format": "xml", "value": document}).status_code == 200
    assert Policy.objects.get().scope == "global"
    assert api_client.delete("/api/policies/global/").status_code == 405


@pytest.mark.parametrize(
    "value",
    [
        "<policies><inbound>",  # not well-formed
        "<policy/>",  # wrong root
        "<policies><inbound><no-such-policy/></inbound></policies>",
        "not xml at all",
    ],
)
def test_invalid_document_is_400_with_position(api_client, scopes, value):
    response = api_client.put(scopes["api"], {"value": value})
    assert response.status_code == 400, response.content
    messages = response.json()["value"]
    assert messages and all(isinstance(m, str) and m for m in messages)
    assert not Policy.objects.exists()


def test_error_names_line_and_column(api_client, scopes):
    value = "<policies>\n  <inbound>\n    <no-such-policy/>\n  </inbound>\n</policies>"
    message = api_client.put(scopes["api"], {"value": value}).json()["value"][0]
    assert message.startswith("line 3, column 5: "), message


@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_xml_bombs_are_refused(api_client, scopes, bomb):
    for url in (*scopes.values(), "/api/policies/global/"):
        response = api_client.put(url, {"format": "xml", "value": bomb})
        assert response.status_code == 400, response.content
        assert "value" in response.json()
        assert "root:" not in response.content.decode()
    assert not Policy.objects.exists()


def test_unknown_format_and_unknown_field_are_400(api_client, scopes):
    assert "format" in api_client.put(scopes["api"], {"format": "xml-link", "value": DOCUMENT}).json()
    assert api_client.put(scopes["api"], {"value": DOCUMENT, "extra": 1}).json() == {"extra": ["Unknown field."]}
    assert "value" in api_client.put(scopes["api"], {}).json()
    assert not Policy.objects.exists()


def test_references_must_exist(api_client, scopes):
    value = (
        "<policies>\n<inbound><base/>\n"
        '<set-backend-service backend-id="missing-backend"/>\n'
        '<set-header name="a" exists-action="override"><value>{{missing-value}}</value></set-header>\n'
        "</inbound></policies>"
    )
    response = api_client.put(scopes["api"], {"value": value})
    assert response.status_code == 400
    messages = " ".join(response.json()["value"])
    assert "backend 'missing-backend' does not exist" in messages
    assert "line 4, column" in messages and "named value 'missing-value' does not exist" in messages
    BackendFactory(name="missing-backend")
    NamedValueFactory(name="missing-value")
    assert api_client.put(scopes["api"], {"value": value}).status_code == 201


def test_scope_rules_come_from_the_gateway_validator(api_client, scopes):
    # forward-request belongs in <backend>; the gateway's usage tables refuse it in <inbound>.
    value = "<policies><inbound><forward-request/></inbound></policies>"
    assert api_client.put(scopes["operation"], {"value": value}).status_code == 400


def test_deleting_the_owner_deletes_its_policy(api_client, scopes):
    api_client.put(scopes["operation"], {"value": DOCUMENT})
    api_client.put(scopes["api"], {"value": DOCUMENT})
    assert api_client.delete("/api/apis/gemini/").status_code == 204
    assert not Policy.objects.exists()
