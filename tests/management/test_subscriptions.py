"""Products and subscriptions: CRUD, scopes, keys (generated, hidden, encrypted, regenerated), limits, master."""

import pytest
from django.db import connection
from rest_framework.exceptions import ValidationError

from gateway.secrets import hash_key
from subscriptions.models import Product, Subscription
from subscriptions.services import Scope, create_subscription

from .crud import CRUDTests
from .factories import APIFactory, ProductFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

PRODUCTS = "/api/products/"
URL = "/api/subscriptions/"


class TestProductCRUD(CRUDTests):
    base_url = PRODUCTS
    model = Product
    factory = ProductFactory
    create_data = {"name": "starter", "display_name": "Starter", "apis": ["gemini"], "subscriptions_limit": 2}
    update_data = {
        "display_name": "Unlimited",
        "description": "All of it",
        "subscription_required": False,
        "approval_required": True,
        "subscriptions_limit": None,
        "state": "published",
        "apis": [],
    }
    patch_data = {"state": "published"}

    def prepare(self):
        APIFactory(name="gemini")


class TestSubscriptionCRUD(CRUDTests):
    base_url = URL
    model = Subscription
    factory = SubscriptionFactory
    create_data = {"name": "team-a", "display_name": "Team A", "scope": "/products/starter"}
    update_data = {"display_name": "Team B", "scope": "/apis/gemini", "state": "suspended"}
    patch_data = {"state": "cancelled"}
    secret_fields = ("primary_key", "secondary_key")

    def prepare(self):
        APIFactory(name="gemini")
        ProductFactory(name="starter")

    def test_retrieve(self, api_client):
        super().test_retrieve(api_client)
        body = api_client.get(f"{URL}master/").json()
        assert "primary_key" not in body and "secondary_key" not in body


def raw_row(name: str) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM subscriptions_subscription WHERE name = %s", [name])
        return cursor.fetchone()


def test_product_defaults(api_client):
    body = api_client.post(PRODUCTS, {"name": "p", "display_name": "P"}).json()
    assert body["state"] == "notPublished"
    assert body["subscription_required"] is True
    assert body["approval_required"] is False
    assert body["subscriptions_limit"] is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"state": "draft"}, "state"),
        ({"subscriptions_limit": -1}, "subscriptions_limit"),
        ({"apis": ["missing"]}, "apis"),
        ({"display_name": ""}, "display_name"),
    ],
)
def test_invalid_product_is_400(api_client, data, field):
    response = api_client.post(PRODUCTS, {"name": "p", "display_name": "P", **data})
    assert response.status_code == 400
    assert field in response.json()
    assert not Product.objects.exists()


def test_open_product_cannot_take_an_api_of_another_open_product(api_client):
    api = APIFactory(name="chat")
    ProductFactory(name="free", subscription_required=False, apis=[api])
    response = api_client.post(
        PRODUCTS, {"name": "free-2", "display_name": "F", "subscription_required": False, "apis": ["chat"]}
    )
    assert response.status_code == 400
    assert "apis" in response.json()


def test_product_with_subscriptions_cannot_be_deleted(api_client):
    product = ProductFactory(name="starter")
    SubscriptionFactory(name="s", product=product)
    response = api_client.delete(f"{PRODUCTS}starter/")
    assert response.status_code == 409
    assert "subscription 's'" in response.json()["detail"]


def test_create_without_state_is_active_and_keys_are_generated(api_client):
    response = api_client.post(URL, {"name": "s", "scope": "/apis"})
    assert response.status_code == 201
    assert response.json()["state"] == "active"
    subscription = Subscription.objects.get(name="s")
    for key in (subscription.primary_key, subscription.secondary_key):
        assert len(key) == 64
        int(key, 16)
    assert subscription.primary_key != subscription.secondary_key


def test_keys_never_listed_nor_stored_in_plaintext(api_client):
    primary, secondary = "custom-primary-key-0001-abcdefghijklmn", "custom-secondary-key-0002-abcdefghijklm"
    response = api_client.post(URL, {"name": "s", "scope": "/apis", "primary_key": primary, "secondary_key": secondary})
    assert response.status_code == 201
    for body in (response.content, api_client.get(URL).content, api_client.get(f"{URL}s/").content):
        assert primary not in body.decode() and secondary not in body.decode()
    row = repr(raw_row("s"))
    assert primary not in row and secondary not in row
    assert hash_key(primary) in row  # the digest, as in the snapshot


def test_list_secrets(api_client):
    primary, secondary = "p" * 32, "s" * 32
    create_subscription(name="s", scope=Scope(), primary_key=primary, secondary_key=secondary)
    response = api_client.post(f"{URL}s/list-secrets/")
    assert response.status_code == 200
    assert response.json() == {"primary_key": primary, "secondary_key": secondary}


@pytest.mark.parametrize(("which", "other"), [("primary", "secondary"), ("secondary", "primary")])
def test_regenerate_key(api_client, which, other):
    subscription = SubscriptionFactory(name="s")
    old, kept = getattr(subscription, f"{which}_key"), getattr(subscription, f"{other}_key")
    response = api_client.post(f"{URL}s/regenerate-{which}-key/")
    assert response.status_code == 204
    subscription.refresh_from_db()
    assert getattr(subscription, f"{which}_key") != old
    assert getattr(subscription, f"{other}_key") == kept
    assert getattr(subscription, f"{which}_key_hash") == hash_key(getattr(subscription, f"{which}_key"))


def test_actions_on_unknown_subscription_are_404(api_client):
    for action in ("list-secrets", "regenerate-primary-key", "regenerate-secondary-key"):
        assert api_client.post(f"{URL}nope/{action}/").status_code == 404


@pytest.mark.parametrize(
    "scope", ["/apis/missing", "/products/missing", "/apis/", "/users/1", "apis", "/apis/a/b", "", "/products"]
)
def test_scope_pointing_at_nothing_is_400(api_client, scope):
    count = Subscription.objects.count()
    response = api_client.post(URL, {"name": "s", "scope": scope})
    assert response.status_code == 400
    assert "scope" in response.json()
    assert Subscription.objects.count() == count


def test_scopes_round_trip(api_client):
    APIFactory(name="gemini")
    ProductFactory(name="starter")
    for name, scope in (("a", "/apis"), ("b", "/apis/gemini"), ("c", "/products/starter")):
        assert api_client.post(URL, {"name": name, "scope": scope}).json()["scope"] == scope
    assert [s["name"] for s in api_client.get(URL, {"scope": "/apis/gemini"}).json()] == ["b"]
    assert [s["name"] for s in api_client.get(URL, {"product": "starter"}).json()] == ["c"]


@pytest.mark.parametrize("key", ["has space" + "x" * 32, "", "x" * 257, "tab\tkey" + "x" * 32, "k", "x" * 31, "é" * 32])
@pytest.mark.parametrize("which", ["primary_key", "secondary_key"])
def test_invalid_custom_key_is_400(api_client, key, which):
    response = api_client.post(URL, {"name": "s", "scope": "/apis", which: key})
    assert response.status_code == 400
    assert which in response.json()
    assert not Subscription.objects.filter(name="s").exists()


def test_short_custom_key_is_400_on_update_too(api_client):
    SubscriptionFactory(name="s")
    response = api_client.patch(f"{URL}s/", {"secondary_key": "short-key"})
    assert response.status_code == 400
    assert "32" in response.json()["secondary_key"][0]


@pytest.mark.parametrize("key", ["k", "x" * 31, "x" * 257, "has space" + "x" * 32])
def test_service_refuses_weak_custom_keys(key):
    """Every write path goes through the service, not only REST (#7 item 13)."""
    with pytest.raises(ValidationError) as error:
        create_subscription(name="s", scope=Scope(), primary_key=key)
    assert "primary_key" in error.value.detail


@pytest.mark.parametrize("key", ["x" * 32, "~" * 256, "!" + "A" * 31])
def test_custom_keys_of_32_to_256_visible_characters_are_accepted(api_client, key):
    response = api_client.post(URL, {"name": "s", "scope": "/apis", "primary_key": key})
    assert response.status_code == 201, response.content
    assert Subscription.objects.get(name="s").primary_key == key


def test_key_used_by_another_subscription_is_409(api_client):
    create_subscription(name="a", scope=Scope(), primary_key="shared-key-123" * 3)
    response = api_client.post(URL, {"name": "b", "scope": "/apis", "secondary_key": "shared-key-123" * 3})
    assert response.status_code == 409
    assert "secondary_key" in response.json()
    assert not Subscription.objects.filter(name="b").exists()


def test_subscriptions_limit_is_enforced_on_create(api_client):
    product = ProductFactory(name="starter", subscriptions_limit=2)
    SubscriptionFactory(product=product)
    SubscriptionFactory(product=product, state="cancelled")  # not counted
    assert api_client.post(URL, {"name": "second", "scope": "/products/starter"}).status_code == 201
    response = api_client.post(URL, {"name": "third", "scope": "/products/starter"})
    assert response.status_code == 409
    assert "at most 2" in response.json()["scope"][0]
    assert not Subscription.objects.filter(name="third").exists()


def test_state_change_and_invalid_state(api_client):
    SubscriptionFactory(name="s")
    assert api_client.patch(f"{URL}s/", {"state": "suspended"}).json()["state"] == "suspended"
    assert api_client.patch(f"{URL}s/", {"state": "paused"}).status_code == 400
    # PUT without state keeps it (no default is applied on update).
    assert api_client.put(f"{URL}s/", {"name": "s", "scope": "/apis"}).json()["state"] == "suspended"


def test_master_subscription_exists():
    master = Subscription.objects.get(name="master")
    assert master.scope == "/apis"
    assert master.state == "active"
    assert len(master.primary_key) == 64 and master.primary_key != master.secondary_key
    assert master.primary_key_hash == hash_key(master.primary_key)
