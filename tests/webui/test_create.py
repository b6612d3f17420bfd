"""Create pages of products, subscriptions and named values (Django's test client): the REST serializer and services
decide, refusals show on their field, secret values never come back in a page, Readers cannot create, and the
pages cost the same number of queries whatever the number of objects."""

import pytest
from django.urls import reverse

from named_values.models import NamedValue
from subscriptions.models import Product, Subscription
from tests.management.factories import APIFactory, NamedValueFactory, ProductFactory, SubscriptionFactory

from .conftest import page_queries

pytestmark = pytest.mark.django_db

CREATABLE = ("named-values", "products", "subscriptions")


def create_url(kind: str) -> str:
    return reverse("webui:object-create", kwargs={"kind": kind})


def field_errors(response, name: str) -> list[str]:
    return list(response.context["form"].errors.get(name, []))


def test_product_created_with_its_apis(operator_client):
    APIFactory(name="chat")
    form = operator_client.get(create_url("products"))
    assert form.status_code == 200
    # the model's default (REST's too): a new product requires a subscription
    assert form.context["form"].initial["subscription_required"] is True
    response = operator_client.post(
        create_url("products"),
        {"name": "starter", "display_name": "Starter", "state": "published", "apis": ["chat"],
         "subscription_required": "on", "subscriptions_limit": "5"},
    )  # fmt: skip
    assert response.status_code == 302
    assert response.url == reverse("webui:object-detail", kwargs={"kind": "products", "name": "starter"})
    product = Product.objects.get(name="starter")
    assert (product.display_name, product.state, product.subscriptions_limit) == ("Starter", "published", 5)
    assert [api.name for api in product.apis.all()] == ["chat"]
    assert "Created product &#x27;starter&#x27;." in operator_client.get(response.url).content.decode()


def test_product_refusals_show_on_their_fields(operator_client):
    ProductFactory(name="taken")
    open_product = ProductFactory(name="open", subscription_required=False, apis=[APIFactory(name="chat")])
    assert open_product.apis.count() == 1
    response = operator_client.post(create_url("products"), {"name": "x", "display_name": "", "state": "published"})
    assert response.status_code == 400
    assert field_errors(response, "display_name") == ["This field is required."]
    response = operator_client.post(
        create_url("products"), {"name": "taken", "display_name": "T", "state": "published"}
    )
    assert response.status_code == 400
    assert field_errors(response, "name") == ["product with this name already exists."]  # the serializer's
    body = response.content.decode()
    assert 'role="alert"' in body
    assert 'aria-invalid="true"' in body
    # the open-product rule of the service, on the APIs field
    response = operator_client.post(
        create_url("products"),
        {"name": "second-open", "display_name": "Second", "state": "published", "apis": ["chat"]},
    )
    assert response.status_code == 400
    assert field_errors(response, "apis") == ["API 'chat' is already in the open product 'open'."]
    assert not Product.objects.filter(name="second-open").exists()


def test_bad_name_is_refused_on_the_name_field(operator_client):
    response = operator_client.post(
        create_url("products"), {"name": "no spaces", "display_name": "X", "state": "published"}
    )
    assert response.status_code == 400
    assert "Use letters, digits" in " ".join(field_errors(response, "name"))


def test_subscription_created_from_an_api_page_with_generated_keys(operator_client):
    APIFactory(name="chat")
    detail = operator_client.get(reverse("webui:object-detail", kwargs={"kind": "apis", "name": "chat"}))
    link = f"{create_url('subscriptions')}?scope=%2Fapis%2Fchat"
    assert link in detail.content.decode()
    form = operator_client.get(link)
    assert form.context["form"].initial["scope"] == "/apis/chat"
    assert form.context["form"].initial["state"] == "active"
    response = operator_client.post(
        create_url("subscriptions"),
        {"name": "team-a", "display_name": "Team A", "scope": "/apis/chat", "state": "active"},
    )
    assert response.status_code == 302
    subscription = Subscription.objects.get(name="team-a")
    assert subscription.api.name == "chat"
    assert subscription.primary_key and subscription.secondary_key != subscription.primary_key
    page = operator_client.get(response.url).content.decode()
    assert "Reveal its keys to copy them." in page
    assert subscription.primary_key not in page and subscription.secondary_key not in page


def test_subscription_scope_errors(operator_client):
    for scope, message in (("/apis/nope", "API 'nope' does not exist."), ("/elsewhere", "Invalid scope '/elsewhere'.")):
        response = operator_client.post(create_url("subscriptions"), {"name": "s", "scope": scope, "state": "active"})
        assert response.status_code == 400
        assert message in " ".join(field_errors(response, "scope"))
    assert not Subscription.objects.filter(name="s").exists()


def test_named_value_secret_is_stored_encrypted_and_never_shown(operator_client):
    form = operator_client.get(create_url("named-values"))
    assert form.context["form"]["secret"].value() is True  # the create form starts secret
    response = operator_client.post(
        create_url("named-values"),
        {"name": "openai-key", "secret": "on", "value": "sk-typed-once", "tags": "llm, prod"},
    )
    assert response.status_code == 302
    named_value = NamedValue.objects.get(name="openai-key")
    assert named_value.secret and named_value.value == "sk-typed-once"
    assert named_value.plain_value == "" and "sk-typed-once" not in named_value.encrypted_value
    assert named_value.tags == ["llm", "prod"]
    for url in (response.url, reverse("webui:object-list", kwargs={"kind": "named-values"})):
        assert "sk-typed-once" not in operator_client.get(url).content.decode()
    # a refused form does not send the typed value back either
    again = operator_client.post(
        create_url("named-values"), {"name": "openai-key", "secret": "on", "value": "sk-again"}
    )
    assert again.status_code == 400
    assert field_errors(again, "name")
    assert "sk-again" not in again.content.decode()


def test_named_value_without_a_value_gets_the_rest_message(operator_client):
    response = operator_client.post(create_url("named-values"), {"name": "empty", "secret": "on", "value": ""})
    assert response.status_code == 400
    assert field_errors(response, "value") == ["This field is required."]
    plain = operator_client.post(create_url("named-values"), {"name": "region", "value": "eu-west"})
    assert plain.status_code == 302
    assert NamedValue.objects.get(name="region").plain_value == "eu-west"


def test_named_value_value_and_boxes_from_the_query_string_are_ignored(operator_client):
    form = operator_client.get(
        create_url("named-values"), {"value": "sk-in-a-link", "name": "prefilled", "secret": "false"}
    )
    assert form.context["form"].initial["name"] == "prefilled"
    assert form.context["form"]["secret"].value() is True  # only text fields are taken from a link
    assert "sk-in-a-link" not in form.content.decode()


@pytest.mark.parametrize("kind", CREATABLE)
def test_reader_cannot_create(reader_client, kind):
    assert reader_client.get(create_url(kind)).status_code == 403
    assert reader_client.post(create_url(kind), {"name": "x"}).status_code == 403
    assert (
        create_url(kind) not in reader_client.get(reverse("webui:object-list", kwargs={"kind": kind})).content.decode()
    )


@pytest.mark.parametrize("kind", CREATABLE)
def test_operator_sees_the_new_button(operator_client, kind):
    assert create_url(kind) in operator_client.get(reverse("webui:object-list", kwargs={"kind": kind})).content.decode()


def test_kinds_without_a_create_page(operator_client):
    # APIs are created by the import wizard (with their operations and backend)
    for kind in ("apis", "operations", "backends", "nothing"):
        assert operator_client.get(f"/ui/{kind}/+new/").status_code == 404


def test_an_object_named_new_is_still_reachable(operator_client):
    ProductFactory(name="new")
    assert (
        operator_client.get(reverse("webui:object-detail", kwargs={"kind": "products", "name": "new"})).status_code
        == 200
    )


def test_home_checklist_links_to_the_create_page(operator_client):
    assert create_url("subscriptions") in operator_client.get(reverse("webui:index")).content.decode()


@pytest.mark.parametrize("kind", CREATABLE)
def test_create_pages_cost_the_same_queries_with_more_objects(operator_client, kind):
    one = page_queries(operator_client, create_url(kind))
    for n in range(30):
        APIFactory()
        ProductFactory()
        SubscriptionFactory()
        NamedValueFactory(name=f"nv-{n}")
    assert page_queries(operator_client, create_url(kind)) == one
