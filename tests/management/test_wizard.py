"""The Language Model API import wizard: both types, access key, products, extra operations, conflicts."""

import pytest

from apis.models import API, Operation
from apis.services import import_language_model
from apis.wizard import POLICY_CONTRIBUTORS, Element, PolicyContributor
from backends.models import Backend
from gateway_admin.exceptions import Conflict
from named_values.models import NamedValue
from policies.models import Policy
from subscriptions.models import Product

from .factories import APIFactory, BackendFactory, NamedValueFactory, ProductFactory

pytestmark = pytest.mark.django_db

URL = "/api/apis/import-language-model/"
GEMINI = {
    "display_name": "Gemini",
    "description": "Google Gemini through its OpenAI-compatible endpoint",
    "url": "https://generativelanguage.googleapis.com/v1beta/openai",
    "path": "gemini",
    "type": "openai",
}
EXPECTED_POLICY = (
    '<policies><inbound><base/><set-backend-service backend-id="gemini-backend"/></inbound>'
    "<backend><base/></backend><outbound><base/></outbound><on-error><base/></on-error></policies>"
)


def counts():
    return tuple(m.objects.count() for m in (API, Operation, Backend, NamedValue, Policy))


def test_openai_with_access_key_and_products(api_client):
    ProductFactory(name="starter")
    ProductFactory(name="unlimited")
    secret = "Bearer gm-secret-123"
    response = api_client.post(
        URL,
        {
            **GEMINI,
            "products": ["starter", "unlimited"],
            "access_key": {"header_name": "Authorization", "value": secret},
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert secret not in response.content.decode()

    assert body["api"]["name"] == "gemini"
    assert body["api"]["service_url"] == GEMINI["url"]
    assert body["api"]["api_type"] == "openai"
    assert body["api"]["subscription_required"] is True
    assert sorted(body["api"]["products"]) == ["starter", "unlimited"]
    assert [(op["method"], op["url_template"], op["name"], op["display_name"]) for op in body["operations"]] == [
        ("POST", "/chat/completions", "chat-completions", "Creates a model response for the given chat conversation")
    ]
    assert body["backend"]["name"] == "gemini-backend"
    assert body["backend"]["url"] == GEMINI["url"]
    assert body["backend"]["credentials_header"] == {"Authorization": "{{gemini-key}}"}
    assert body["named_value"]["name"] == "gemini-key"
    assert body["named_value"]["secret"] is True
    assert body["named_value"]["value"] is None
    assert body["policy"] == {"format": "xml", "value": EXPECTED_POLICY}

    assert NamedValue.objects.get(name="gemini-key").value == secret
    assert Product.objects.get(name="starter").apis.get().name == "gemini"
    assert api_client.get("/api/apis/gemini/policy/").json()["value"] == EXPECTED_POLICY


def test_openai_extra_operations(api_client):
    response = api_client.post(
        URL, {**GEMINI, "operations": ["POST /embeddings", "GET /models", "POST /responses", "POST /completions"]}
    )
    assert response.status_code == 201, response.content
    operations = {(op["method"], op["url_template"]): op for op in response.json()["operations"]}
    assert set(operations) == {
        ("POST", "/chat/completions"),
        ("POST", "/embeddings"),
        ("GET", "/models"),
        ("POST", "/responses"),
        ("POST", "/completions"),
    }
    assert (
        operations[("POST", "/embeddings")]["display_name"] == "Creates an embedding vector representing the input text"
    )
    assert operations[("GET", "/models")]["display_name"] == "Lists the currently available models"


def test_passthrough_without_access_key(api_client):
    data = {
        "display_name": "Amazon Bedrock",
        "url": "https://bedrock-runtime.eu-west-1.amazonaws.com",
        "path": "bedrock",
        "type": "passthrough",
        "subscription_required": False,
    }
    response = api_client.post(URL, data)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["api"]["name"] == "amazon-bedrock"
    assert body["api"]["subscription_required"] is False
    assert body["named_value"] is None
    assert body["backend"]["credentials_header"] == {}
    assert sorted((op["name"], op["method"], op["display_name"], op["url_template"]) for op in body["operations"]) == [
        (m.lower(), m, m, "/*") for m in sorted(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"])
    ]
    assert 'backend-id="amazon-bedrock-backend"' in body["policy"]["value"]
    assert not NamedValue.objects.exists()


@pytest.mark.parametrize(
    ("existing", "field"),
    [
        (lambda: APIFactory(name="gemini"), "name"),
        (lambda: APIFactory(name="other", path="gemini"), "path"),
        (lambda: BackendFactory(name="gemini-backend"), "name"),
        (lambda: NamedValueFactory(name="gemini-key"), "name"),
    ],
    ids=["api-name", "path", "backend-name", "named-value-name"],
)
def test_conflicts_are_409_and_leave_no_rows(api_client, existing, field):
    existing()
    before = counts()
    response = api_client.post(URL, {**GEMINI, "access_key": {"header_name": "api-key", "value": "k"}})
    assert response.status_code == 409, response.content
    assert field in response.json()
    assert counts() == before


def test_failure_midway_rolls_back_everything(api_client, monkeypatch):
    """A failure after rows were written (here: at the policy step) leaves nothing behind."""
    ProductFactory(name="starter")

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("apis.services.set_policy", explode)
    api_client.raise_request_exception = False
    response = api_client.post(
        URL, {**GEMINI, "products": ["starter"], "access_key": {"header_name": "a", "value": "k"}}
    )
    assert response.status_code == 500
    assert counts() == (0, 0, 0, 0, 0)
    assert not Product.objects.get(name="starter").apis.exists()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"url": "ftp://example.com"}, "url"),
        ({"url": "https://"}, "url"),
        ({"path": "/gemini"}, "path"),
        ({"path": "gem ini"}, "path"),
        ({"type": "soap"}, "type"),
        ({"products": ["missing"]}, "products"),
        ({"access_key": {"header_name": "bad header", "value": "k"}}, "access_key"),
        ({"access_key": {"header_name": "a", "value": "  "}}, "access_key"),
        ({"access_key": {"header_name": "a", "value": "k", "extra": 1}}, "access_key"),
        ({"operations": ["DELETE /everything"]}, "operations"),
        ({"type": "passthrough", "operations": ["GET /models"]}, "operations"),
        ({"display_name": "!!!"}, "name"),
        ({"name": "import-language-model"}, "name"),
        ({"token_limit": {"token_quota": 5}}, "token_limit"),  # a quota needs its period
    ],
)
def test_invalid_input_is_400_and_leaves_no_rows(api_client, data, field):
    response = api_client.post(URL, {**GEMINI, **data})
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert counts() == (0, 0, 0, 0, 0)


def test_missing_fields_are_named(api_client):
    response = api_client.post(URL, {})
    assert response.status_code == 400
    assert {"display_name", "url", "path", "type"} <= set(response.json())


def test_service_is_callable_directly_and_checks_conflicts():
    result = import_language_model({**GEMINI, "name": "direct", "products": []})
    assert result.api.name == "direct" and result.backend.name == "direct-backend"
    assert [op.name for op in result.operations] == ["chat-completions"]
    with pytest.raises(Conflict):
        import_language_model({**GEMINI, "name": "direct"})


def test_policy_contributors_extend_the_document(monkeypatch):
    class AddHeader(PolicyContributor):
        key = "team_header"

        def inbound(self, block, context):
            return [
                Element(
                    "set-header",
                    {"name": "x-team", "exists-action": "override"},
                    [Element("value", text=block["team"])],
                )
            ]

    monkeypatch.setattr("apis.wizard.POLICY_CONTRIBUTORS", [*POLICY_CONTRIBUTORS, AddHeader()])
    result = import_language_model({**GEMINI, "team_header": {"team": "a&b"}})
    assert result.policy.value.startswith(
        '<policies><inbound><base/><set-backend-service backend-id="gemini-backend"/>'
        '<set-header name="x-team" exists-action="override"><value>a&amp;b</value></set-header></inbound>'
    )
