"""APIs and operations: CRUD, path and URL template validation, 409 on duplicates, products, delete rules."""

import pytest

from apis.models import API, Operation
from subscriptions.models import Product

from .crud import CRUDTests
from .factories import APIFactory, OperationFactory, ProductFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

URL = "/api/apis/"


class TestAPICRUD(CRUDTests):
    base_url = URL
    model = API
    factory = APIFactory
    create_data = {
        "name": "gemini",
        "display_name": "Gemini",
        "path": "gemini",
        "service_url": "https://generativelanguage.googleapis.com/v1beta/openai",
        "api_type": "openai",
        "products": ["starter"],
    }
    update_data = {
        "display_name": "Renamed",
        "path": "llm/gemini",
        "service_url": "",
        "api_type": "passthrough",
        "subscription_required": False,
        "subscription_key_header": "api-key",
        "subscription_key_query": "api-key",
    }
    patch_data = {"description": "A model"}

    def prepare(self):
        ProductFactory(name="starter")


class TestOperationCRUD(CRUDTests):
    model = Operation
    factory = OperationFactory
    create_data = {
        "name": "chat-completions",
        "display_name": "Creates a model response for the given chat conversation",
        "method": "POST",
        "url_template": "/chat/completions",
    }
    update_data = {"display_name": "Any", "method": "GET", "url_template": "/deployments/{deployment-id}/*"}
    patch_data = {"description": "x"}

    def prepare(self):
        self.api = APIFactory(name="gemini")
        self.base_url = f"{URL}gemini/operations/"

    def make(self):
        return OperationFactory(api=self.api)

    def queryset(self):
        return Operation.objects.filter(api=self.api)


def test_api_defaults(api_client):
    response = api_client.post(URL, {"name": "a", "display_name": "A", "path": "a"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["subscription_required"] is True
    assert body["subscription_key_header"] == "Ocp-Apim-Subscription-Key"
    assert body["subscription_key_query"] == "subscription-key"
    assert body["products"] == []


def test_duplicate_path_is_409(api_client):
    APIFactory(name="one", path="llm/chat")
    response = api_client.post(URL, {"name": "two", "display_name": "Two", "path": "llm/chat"})
    assert response.status_code == 409
    assert "path" in response.json()
    assert not API.objects.filter(name="two").exists()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"path": "/leading"}, "path"),
        ({"path": "trailing/"}, "path"),
        ({"path": "a//b"}, "path"),
        ({"path": "a/../b"}, "path"),
        ({"path": "sp ace"}, "path"),
        ({"path": ""}, "path"),
        ({"service_url": "gopher://x"}, "service_url"),
        ({"api_type": "soap"}, "api_type"),
        ({"subscription_key_header": "bad header"}, "subscription_key_header"),
        ({"subscription_key_query": "a&b"}, "subscription_key_query"),
        ({"products": ["missing"]}, "products"),
        ({"name": "import-language-model"}, "name"),
        ({"name": "has/slash"}, "name"),
    ],
)
def test_invalid_api_is_400(api_client, data, field):
    response = api_client.post(URL, {"name": "x", "display_name": "X", "path": "x", **data})
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not API.objects.exists()


def test_api_in_two_open_products_is_400(api_client):
    ProductFactory(name="open-1", subscription_required=False)
    ProductFactory(name="open-2", subscription_required=False)
    response = api_client.post(URL, {"name": "x", "display_name": "X", "path": "x", "products": ["open-1", "open-2"]})
    assert response.status_code == 400
    assert "products" in response.json()


def test_api_with_subscriptions_cannot_be_deleted(api_client):
    api = APIFactory(name="chat")
    SubscriptionFactory(name="team", api=api)
    response = api_client.delete(f"{URL}chat/")
    assert response.status_code == 409
    assert "subscription 'team'" in response.json()["detail"]
    assert API.objects.filter(name="chat").exists()


def test_deleting_api_removes_operations_and_product_links(api_client):
    api = APIFactory(name="chat")
    OperationFactory(api=api)
    product = ProductFactory(apis=[api])
    assert api_client.delete(f"{URL}chat/").status_code == 204
    assert not Operation.objects.exists()
    assert list(Product.objects.get(pk=product.pk).apis.all()) == []


def test_filter_apis(api_client):
    APIFactory(name="a", api_type="openai")
    api = APIFactory(name="b", api_type="passthrough")
    ProductFactory(name="p", apis=[api])
    assert [a["name"] for a in api_client.get(URL, {"api_type": "passthrough"}).json()] == ["b"]
    assert [a["name"] for a in api_client.get(URL, {"product": "p"}).json()] == ["b"]


#
# Operations
#


def test_operations_of_unknown_api_are_404(api_client):
    assert api_client.get(f"{URL}nope/operations/").status_code == 404
    response = api_client.post(f"{URL}nope/operations/", TestOperationCRUD.create_data)
    assert response.status_code == 404
    assert not Operation.objects.exists()


def test_operations_are_per_api(api_client):
    first, second = APIFactory(name="first"), APIFactory(name="second")
    OperationFactory(api=first, name="chat")
    OperationFactory(api=second, name="chat", url_template="/chat")
    assert [op["name"] for op in api_client.get(f"{URL}first/operations/").json()] == ["chat"]
    assert api_client.get(f"{URL}first/operations/chat/").json()["api"] == "first"
    # The same name may exist in another API.
    response = api_client.post(
        f"{URL}second/operations/", {"name": "embed", "display_name": "E", "method": "POST", "url_template": "/e"}
    )
    assert response.status_code == 201


def test_duplicate_method_and_template_is_409(api_client):
    api = APIFactory(name="chat")
    OperationFactory(api=api, name="a", method="POST", url_template="/chat/completions")
    response = api_client.post(
        f"{URL}chat/operations/",
        {"name": "b", "display_name": "B", "method": "POST", "url_template": "/chat/completions"},
    )
    assert response.status_code == 409
    assert "url_template" in response.json()
    assert Operation.objects.count() == 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"url_template": "chat"}, "url_template"),
        ({"url_template": "/a/*/b"}, "url_template"),
        ({"url_template": "/a?b=c"}, "url_template"),
        ({"url_template": "/a/{unclosed"}, "url_template"),
        ({"url_template": "/a//b"}, "url_template"),
        ({"method": "FETCH"}, "method"),
        ({"method": "post"}, "method"),
    ],
)
def test_invalid_operation_is_400(api_client, data, field):
    APIFactory(name="chat")
    response = api_client.post(
        f"{URL}chat/operations/", {"name": "op", "display_name": "Op", "method": "POST", "url_template": "/x", **data}
    )
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Operation.objects.exists()


@pytest.mark.parametrize("template", ["/", "/*", "/chat/completions", "/deployments/{deployment-id}/chat", "/v1/"])
def test_valid_url_templates(api_client, template):
    APIFactory(name="chat")
    response = api_client.post(
        f"{URL}chat/operations/", {"name": "op", "display_name": "Op", "method": "GET", "url_template": template}
    )
    assert response.status_code == 201, response.content
