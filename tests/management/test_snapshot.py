"""The gateway snapshot: token check, ETag / 304, revision bumps, contents, secrets only under the snapshot key."""

import json

import pytest
from django.test import override_settings

from gateway.secrets import hash_key, snapshot_fernet
from gateway_admin.models import ConfigRevision
from gateway_admin.snapshot import build_snapshot
from named_values.models import NamedValue
from policies.choices import PolicyScopeChoices
from policies.services import DEFAULT_GLOBAL_POLICY, set_policy
from subscriptions.models import Subscription
from subscriptions.services import Scope, create_subscription

from .factories import APIFactory, BackendFactory, NamedValueFactory, OperationFactory, ProductFactory

pytestmark = pytest.mark.django_db

URL = "/api/gateway/snapshot/"
TOKEN = "test-gateway-token"


def test_wrong_or_missing_token_is_401(anon_client):
    for header in (None, "Gateway wrong", f"Bearer {TOKEN}", "Gateway", f"Token {TOKEN}"):
        if header:
            anon_client.credentials(HTTP_AUTHORIZATION=header)
        response = anon_client.get(URL)
        assert response.status_code == 401, header
        assert response.json() == {"detail": "Invalid or missing gateway token."}
        assert response["WWW-Authenticate"] == "Gateway"


def test_admin_session_is_not_enough(anon_client, admin_user):
    anon_client.force_login(admin_user)
    assert anon_client.get(URL).status_code == 401


@override_settings(SLUICE={"SECRET_KEYS": ["4-EeuvhFWBrcspQYU2fIeA5CmBcIS_g7uLJ4Xv-dBe4="], "GATEWAY_TOKEN": ""})
def test_no_configured_token_is_503(anon_client):
    anon_client.credentials(HTTP_AUTHORIZATION="Gateway ")
    response = anon_client.get(URL)
    assert response.status_code == 503
    assert "SLUICE_GATEWAY_TOKEN" in response.json()["detail"]


def test_etag_and_304(gateway_client):
    response = gateway_client.get(URL)
    assert response.status_code == 200
    revision = response.json()["revision"]
    assert response["ETag"] == f'"{revision}"'
    not_modified = gateway_client.get(URL, HTTP_IF_NONE_MATCH=f'"{revision}"')
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified["ETag"] == f'"{revision}"'
    assert gateway_client.get(URL, HTTP_IF_NONE_MATCH=f'W/"{revision}", "x"').status_code == 304
    assert gateway_client.get(URL, HTTP_IF_NONE_MATCH="*").status_code == 304
    assert gateway_client.get(URL, HTTP_IF_NONE_MATCH='"0"').status_code == 200


def test_a_change_bumps_the_revision_and_the_etag(gateway_client, api_client):
    etag = gateway_client.get(URL)["ETag"]
    assert api_client.post("/api/backends/", {"name": "b", "url": "https://x.example.com"}).status_code == 201
    response = gateway_client.get(URL, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 200
    assert response["ETag"] != etag
    assert [b["name"] for b in response.json()["backends"]] == ["b"]


@pytest.mark.parametrize(
    "change",
    [
        lambda: APIFactory(),
        lambda: OperationFactory(),
        lambda: BackendFactory(),
        lambda: NamedValueFactory(),
        lambda: ProductFactory(),
        lambda: create_subscription(name="s", scope=Scope()),
        lambda: set_policy(PolicyScopeChoices.GLOBAL, None, DEFAULT_GLOBAL_POLICY),
        lambda: ProductFactory(apis=[APIFactory()]).apis.clear(),
        lambda: NamedValue.objects.create(name="x", plain_value="1").delete(),
        lambda: Subscription.objects.get(name="master").save(),
    ],
    ids=["api", "operation", "backend", "named-value", "product", "subscription", "policy", "m2m", "delete", "save"],
)
def test_every_configuration_change_bumps_the_revision(change):
    before = ConfigRevision.current()
    change()
    assert ConfigRevision.current() > before


def test_failed_write_does_not_bump(api_client):
    before = ConfigRevision.current()
    assert api_client.post("/api/backends/", {"name": "b", "url": "nope"}).status_code == 400
    assert ConfigRevision.current() == before


def test_snapshot_contents():
    NamedValueFactory(name="gemini-key", value="Bearer gm-secret", secret=True)
    NamedValueFactory(name="region", value="eu")
    BackendFactory(
        name="gemini-backend", url="https://g.example.com/v1", credentials_header={"Authorization": "{{gemini-key}}"}
    )
    api = APIFactory(name="gemini", path="gemini", service_url="https://g.example.com/v1")
    operation = OperationFactory(api=api, name="chat-completions", method="POST", url_template="/chat/completions")
    product = ProductFactory(name="starter", state="published", apis=[api])
    api_doc = '<policies><inbound><base/><set-backend-service backend-id="gemini-backend"/></inbound></policies>'
    op_doc = "<policies><inbound><base/></inbound></policies>"
    set_policy(PolicyScopeChoices.API, api, api_doc)
    set_policy(PolicyScopeChoices.OPERATION, operation, op_doc)
    subscription = create_subscription(
        name="team", scope=Scope(product=product), primary_key="pk-1" * 8, secondary_key="sk-1" * 8
    )

    snapshot = build_snapshot()
    assert snapshot["version"] == 1
    assert snapshot["revision"] == ConfigRevision.current()
    assert snapshot["generated_at"].endswith("Z")
    assert snapshot["global_policy"] == DEFAULT_GLOBAL_POLICY
    named = {nv["name"]: nv for nv in snapshot["named_values"]}
    assert named["region"] == {"name": "region", "secret": False, "value": "eu", "encrypted_value": None}
    assert named["gemini-key"]["value"] is None and named["gemini-key"]["secret"] is True
    assert snapshot["backends"] == [
        {
            "name": "gemini-backend",
            "type": "Single",
            "url": "https://g.example.com/v1",
            "credentials_header": {"Authorization": "{{gemini-key}}"},
            "credentials_query": {},
            "pool_services": [],
            "circuit_breaker": None,
        }
    ]
    assert snapshot["products"] == [
        {"name": "starter", "state": "published", "subscription_required": True, "apis": ["gemini"], "policy": None}
    ]
    (api_entry,) = snapshot["apis"]
    assert api_entry == {
        "name": "gemini",
        "path": "gemini",
        "service_url": "https://g.example.com/v1",
        "api_type": "openai",
        "subscription_required": True,
        "subscription_key_header": "Ocp-Apim-Subscription-Key",
        "subscription_key_query": "subscription-key",
        "policy": api_doc,
        "operations": [
            {
                "name": "chat-completions",
                "display_name": operation.display_name,
                "method": "POST",
                "url_template": "/chat/completions",
                "policy": op_doc,
            }
        ],
    }
    subscriptions = {s["name"]: s for s in snapshot["subscriptions"]}
    assert subscriptions["team"] == {
        "name": "team",
        "scope": "/products/starter",
        "state": "active",
        "key_hashes": [hash_key("pk-1" * 8), hash_key("sk-1" * 8)],
    }
    master = Subscription.objects.get(name="master")
    assert subscriptions["master"]["scope"] == "/apis"
    assert subscriptions["master"]["key_hashes"] == [hash_key(master.primary_key), hash_key(master.secondary_key)]
    assert subscription.primary_key == "pk-1" * 8


def test_secret_round_trip_and_no_plaintext_in_the_json(gateway_client):
    NamedValueFactory(name="gemini-key", value="Bearer gm-secret-xyz", secret=True)
    create_subscription(
        name="team", scope=Scope(), primary_key="primary-plain-key" * 2, secondary_key="secondary-plain-key" * 2
    )
    response = gateway_client.get(URL)
    text = response.content.decode()
    for plaintext in ("gm-secret-xyz", "primary-plain-key", "secondary-plain-key"):
        assert plaintext not in text
    master = Subscription.objects.get(name="master")
    assert master.primary_key not in text and master.secondary_key not in text
    stored = NamedValue.objects.get(name="gemini-key").encrypted_value
    (entry,) = [nv for nv in json.loads(text)["named_values"] if nv["name"] == "gemini-key"]
    # Re-encrypted under the snapshot key, not the at-rest ciphertext.
    assert entry["encrypted_value"] != stored
    assert snapshot_fernet(TOKEN).decrypt(entry["encrypted_value"].encode()).decode() == "Bearer gm-secret-xyz"
    assert stored not in text


def test_snapshot_is_not_in_the_openapi_schema(api_client):
    assert URL not in api_client.get("/api/schema/?format=json").content.decode()


def test_snapshot_loads_in_the_gateway():
    """The contract round trip: what build_snapshot() writes, gateway.snapshot.load_snapshot() accepts."""
    from apis.services import import_language_model
    from gateway.snapshot import load_snapshot

    product = ProductFactory(name="starter", state="published")
    import_language_model(
        {
            "display_name": "Gemini",
            "url": "https://g.example.com/v1",
            "path": "gemini",
            "type": "openai",
            "products": [product],
            "access_key": {"header_name": "Authorization", "value": "Bearer gm-secret"},
            "operations": ["GET /models"],
        }
    )
    import_language_model(
        {"display_name": "Bedrock", "url": "https://b.example.com", "path": "bedrock", "type": "passthrough"}
    )
    NamedValueFactory(name="team", value="a")
    set_policy(
        PolicyScopeChoices.PRODUCT,
        product,
        '<policies><inbound><base/><set-header name="x-team" exists-action="override"><value>{{team}}</value>'
        "</set-header></inbound></policies>",
    )
    create_subscription(name="team", scope=Scope(product=product))
    snapshot = json.loads(json.dumps(build_snapshot()))
    assert load_snapshot(snapshot, gateway_token=TOKEN) is not None
