"""Create pages of backends, operations, products, subscriptions and named values (Django's test client): the REST
serializer and services decide, refusals show on their field, secret values never come back in a page, Readers cannot
create, and the pages cost the same number of queries whatever the number of objects."""

import pytest
from django.urls import reverse

from apis.models import Operation
from backends.models import Backend
from named_values.models import NamedValue
from subscriptions.models import Product, Subscription
from tests.management.factories import (
    APIFactory,
    BackendFactory,
    NamedValueFactory,
    OperationFactory,
    ProductFactory,
    SubscriptionFactory,
)

from .conftest import page_queries

pytestmark = pytest.mark.django_db

CREATABLE = ("backends", "named-values", "operations", "products", "subscriptions")


def create_url(kind: str) -> str:
    return reverse("webui:object-create", kwargs={"kind": kind})


def field_errors(response, name: str) -> list[str]:
    return list(response.context["form"].errors.get(name, []))


def opened_from_the_api_page(client, link: str):
    """The create form behind `link`, a button of API chat's page (which must show it)."""
    APIFactory(name="chat")
    detail = client.get(reverse("webui:object-detail", kwargs={"kind": "apis", "name": "chat"}))
    assert link in detail.content.decode()
    return client.get(link)


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
    form = opened_from_the_api_page(operator_client, f"{create_url('subscriptions')}?scope=%2Fapis%2Fchat")
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
    for kind in ("apis", "nothing"):
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
        api = APIFactory()
        OperationFactory(api=api)
        BackendFactory()
        ProductFactory(apis=[api])
        SubscriptionFactory()
        NamedValueFactory(name=f"nv-{n}")
    assert page_queries(operator_client, create_url(kind)) == one


def test_subscription_edit_page_costs_the_same_queries_with_more_apis_and_products(operator_client):
    subscription = SubscriptionFactory(name="team-a")
    url = reverse("webui:object-edit", kwargs={"kind": "subscriptions", "name": subscription.name})
    one = page_queries(operator_client, url)
    for _ in range(30):
        ProductFactory(apis=[APIFactory()])
    assert page_queries(operator_client, url) == one


#
# Backends
#


def test_single_backend_created_with_a_credential_from_a_named_value(operator_client):
    NamedValueFactory(name="openai-key", value="sk-1", secret=True)
    form = operator_client.get(create_url("backends"))
    assert form.status_code == 200
    assert form.context["form"]["type"].value() == "Single"
    assert "null</textarea>" not in form.content.decode() and "{}</textarea>" not in form.content.decode()
    response = operator_client.post(
        create_url("backends"),
        {"name": "openai", "type": "Single", "url": "https://api.openai.com/v1", "description": "OpenAI",
         "credentials_header": '{"api-key": "{{openai-key}}"}', "credentials_query": ""},
    )  # fmt: skip
    assert response.status_code == 302, response.context and response.context["form"].errors
    assert response.url == reverse("webui:object-detail", kwargs={"kind": "backends", "name": "openai"})
    backend = Backend.objects.get(name="openai")
    assert (backend.type, backend.url, backend.description) == ("Single", "https://api.openai.com/v1", "OpenAI")
    assert backend.credentials_header == {"api-key": "{{openai-key}}"} and backend.credentials_query == {}
    assert "Created backend &#x27;openai&#x27;." in operator_client.get(response.url).content.decode()


def test_pool_backend_created_from_single_backends(operator_client):
    BackendFactory(name="ptu", url="https://ptu.example.com/v1")
    BackendFactory(name="paygo", url="https://paygo.example.com/v1")
    pool = '{"services": [{"backend": "ptu", "priority": 1}, {"backend": "paygo", "priority": 2}]}'
    response = operator_client.post(create_url("backends"), {"name": "llm-pool", "type": "Pool", "pool": pool})
    assert response.status_code == 302
    backend = Backend.objects.get(name="llm-pool")
    assert backend.type == "Pool" and [m["backend"] for m in backend.pool["services"]] == ["ptu", "paygo"]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": "b", "url": ""}, "url", "A Single backend needs a URL."),
        ({"name": "b", "url": "ftp://x"}, "url", "http"),
        ({"name": "b", "url": "https://x.example", "credentials_header": "{nope"}, "credentials_header", "JSON"),
        ({"name": "b", "url": "https://x.example", "credentials_header": '{"api-key": "{{missing}}"}'},
         "credentials_header", "Unknown named value(s): missing."),
        ({"name": "b", "type": "Pool", "pool": '{"services": [{"backend": "nope"}]}'}, "pool", "No backend named"),
        ({"name": "b", "type": "Pool", "url": "https://x.example", "pool": '{"services": [{"backend": "x"}]}'},
         "url", "A Pool backend has no URL of its own"),
        ({"name": "no spaces", "url": "https://x.example"}, "name", "Use letters, digits"),
        ({"name": "taken", "url": "https://x.example"}, "name", "already exists"),
    ],
)  # fmt: skip
def test_backend_refusals_show_on_their_fields(operator_client, data, field, message):
    BackendFactory(name="taken")
    response = operator_client.post(create_url("backends"), data)
    assert response.status_code == 400
    assert message in " ".join(field_errors(response, field)), response.context["form"].errors
    assert 'role="alert"' in response.content.decode()
    assert not Backend.objects.exclude(name="taken").exists()


def test_backend_refused_by_the_write_time_check_on_its_field(operator_client):
    """A secret ending in a newline passes its own serializer (unused, harmless); a backend sending it as a header
    would make the gateway refuse the snapshot: the write-time check puts that on the credential field."""
    NamedValueFactory(name="key", value="sk-1\n", secret=True)
    response = operator_client.post(
        create_url("backends"),
        {"name": "b", "url": "https://b.example.com", "credentials_header": '{"api-key": "{{key}}"}'},
    )
    assert response.status_code == 400
    assert "contains CR, LF or NUL" in " ".join(field_errors(response, "credentials_header"))
    assert not Backend.objects.filter(name="b").exists()


#
# Operations
#


def test_operation_created_from_its_api_page(operator_client):
    form = opened_from_the_api_page(operator_client, f"{create_url('operations')}?api=chat")
    assert form.context["form"]["api"].value() == "chat"
    assert form.context["cancel_url"] == reverse("webui:object-detail", kwargs={"kind": "apis", "name": "chat"})
    assert '<option value="chat" selected>' in form.content.decode()
    response = operator_client.post(
        create_url("operations"),
        {"api": "chat", "name": "chat-completions", "display_name": "Chat completions", "method": "POST",
         "url_template": "/chat/completions", "description": ""},
    )  # fmt: skip
    assert response.status_code == 302
    assert response.url == reverse(
        "webui:object-detail", kwargs={"kind": "operations", "api": "chat", "name": "chat-completions"}
    )
    operation = Operation.objects.get(name="chat-completions")
    assert (operation.api.name, operation.method, operation.url_template) == ("chat", "POST", "/chat/completions")


def test_operation_refusals_show_on_their_fields(operator_client):
    api = APIFactory(name="chat")
    OperationFactory(api=api, name="taken", method="GET", url_template="/models")
    base = {"api": "chat", "name": "op", "display_name": "Op", "method": "POST", "url_template": "/op"}
    for change, field, message in (
        ({"api": "nope"}, "api", "Select a valid choice."),
        ({"api": ""}, "api", "This field is required."),
        ({"name": "taken"}, "name", "API 'chat' already has an operation named 'taken'."),
        ({"method": "GET", "url_template": "/models"}, "url_template", "already has an operation for GET /models."),
        ({"method": "BREW"}, "method", "Select a valid choice."),
        ({"url_template": "chat"}, "url_template", "The URL template must start with '/'."),
        ({"display_name": ""}, "display_name", "This field is required."),
    ):
        response = operator_client.post(create_url("operations"), {**base, **change})
        assert response.status_code == 400
        assert message in " ".join(field_errors(response, field)), (change, response.context["form"].errors)
    assert list(Operation.objects.values_list("name", flat=True)) == ["taken"]


def test_an_api_link_that_names_no_api_is_no_error(operator_client):
    for api in ("nope", "a/b", ""):
        response = operator_client.get(create_url("operations"), {"api": api})
        assert response.status_code == 200


def test_reader_sees_no_new_operation_button(reader_client):
    APIFactory(name="chat")
    page = reader_client.get(reverse("webui:object-detail", kwargs={"kind": "apis", "name": "chat"})).content.decode()
    assert create_url("operations") not in page


#
# The subscription scope, picked from a menu
#


def test_scope_menu_lists_all_apis_each_api_and_each_product(operator_client):
    APIFactory(name="chat", display_name="Chat")
    ProductFactory(name="starter", display_name="Starter")
    body = operator_client.get(create_url("subscriptions")).content.decode()
    assert '<select name="scope"' in body
    for option in (
        '<option value="" selected>Choose a scope</option>',
        '<option value="/apis">All APIs</option>',
        '<option value="/apis/chat">chat (Chat)</option>',
        '<option value="/products/starter">starter (Starter)</option>',
    ):
        assert option in body
    # from an API's page, the API is chosen
    assert (
        '<option value="/apis/chat" selected>'
        in operator_client.get(create_url("subscriptions"), {"scope": "/apis/chat"}).content.decode()
    )


def test_scope_picked_for_a_product_goes_through_the_service(operator_client):
    ProductFactory(name="starter", subscriptions_limit=1)
    data = {"name": "team-a", "scope": "/products/starter", "state": "active"}
    assert operator_client.post(create_url("subscriptions"), data).status_code == 302
    assert Subscription.objects.get(name="team-a").product.name == "starter"
    # the product's limit is the service's rule, shown on the menu
    response = operator_client.post(create_url("subscriptions"), {**data, "name": "team-b"})
    assert response.status_code == 400
    assert "allows at most 1 subscription" in " ".join(field_errors(response, "scope"))


def test_a_refused_scope_stays_chosen_rather_than_another(operator_client):
    APIFactory(name="chat")
    data = {"name": "s", "scope": "/apis/gone", "state": "active"}
    response = operator_client.post(create_url("subscriptions"), data)
    assert response.status_code == 400
    body = response.content.decode()
    assert '<option value="/apis/gone" selected>/apis/gone</option>' in body
    assert '<option value="/apis" selected>' not in body
    empty = operator_client.post(create_url("subscriptions"), {"name": "s", "scope": "", "state": "active"})
    assert field_errors(empty, "scope") == ["This field is required."]
    assert not Subscription.objects.filter(name="s").exists()


def test_subscription_edit_page_picks_a_new_scope(operator_client):
    api = APIFactory(name="chat")
    subscription = SubscriptionFactory(name="team-a", api=api)
    url = reverse("webui:object-edit", kwargs={"kind": "subscriptions", "name": "team-a"})
    assert '<option value="/apis/chat" selected>' in operator_client.get(url).content.decode()
    response = operator_client.post(url, {"display_name": "", "scope": "/apis", "state": "active"})
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.api is None and subscription.product is None
