"""Named values: CRUD, secrets never shown and never stored in plaintext, list-value, delete protection."""

import pytest
from django.db import connection

from backends.models import Backend
from named_values.models import NamedValue
from policies.choices import PolicyScopeChoices
from policies.services import set_policy

from .crud import CRUDTests
from .factories import APIFactory, BackendFactory, NamedValueFactory

pytestmark = pytest.mark.django_db

URL = "/api/named-values/"


class TestNamedValueCRUD(CRUDTests):
    base_url = URL
    model = NamedValue
    factory = NamedValueFactory
    create_data = {"name": "region.eu", "value": "eu-west", "tags": ["geo"]}
    update_data = {"value": "eu-central", "secret": False, "tags": ["geo", "prod"]}
    patch_data = {"tags": ["x"]}

    def assert_updated(self, obj, data):
        if "value" in data:
            assert obj.value == data["value"]
        if "tags" in data:
            assert obj.tags == data["tags"]


class TestSecretNamedValueCRUD(CRUDTests):
    base_url = URL
    model = NamedValue
    factory = NamedValueFactory
    create_data = {"name": "openai-key", "value": "sk-create-secret-0001", "secret": True}
    update_data = {"value": "sk-update-secret-0002", "secret": True}
    patch_data = {"value": "sk-patch-secret-0003"}
    secret_fields = ("value",)

    def make(self):
        return NamedValueFactory(secret=True, value="sk-factory-secret-0004")

    def assert_updated(self, obj, data):
        assert obj.secret
        assert obj.value == data["value"]
        assert obj.plain_value == ""


def raw_row(name: str) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM named_values_namedvalue WHERE name = %s", [name])
        return cursor.fetchone()


def test_secret_is_never_listed_nor_stored_in_plaintext(api_client):
    secret = "sk-very-secret-value-42"
    response = api_client.post(URL, {"name": "key", "value": secret, "secret": True})
    assert response.status_code == 201
    assert secret not in response.content.decode()
    assert response.json()["value"] is None
    assert secret not in api_client.get(URL).content.decode()
    assert secret not in api_client.get(f"{URL}key/").content.decode()
    assert secret not in repr(raw_row("key"))
    named_value = NamedValue.objects.get(name="key")
    assert named_value.plain_value == ""
    assert named_value.encrypted_value.startswith("gAAAA")


def test_plain_value_is_shown(api_client):
    NamedValueFactory(name="region", value="eu")
    assert api_client.get(f"{URL}region/").json()["value"] == "eu"


def test_list_value_reveals_secret(api_client):
    NamedValueFactory(name="key", value="sk-123456", secret=True)
    response = api_client.post(f"{URL}key/list-value/")
    assert response.status_code == 200
    assert response.json() == {"value": "sk-123456"}


def test_list_value_unknown_is_404(api_client):
    assert api_client.post(f"{URL}nope/list-value/").status_code == 404


def test_update_without_value_keeps_it_and_flipping_secret_moves_it(api_client):
    NamedValueFactory(name="key", value="plain-then-secret")
    response = api_client.patch(f"{URL}key/", {"secret": True})
    assert response.status_code == 200
    named_value = NamedValue.objects.get(name="key")
    assert named_value.secret and named_value.plain_value == "" and named_value.value == "plain-then-secret"
    assert "plain-then-secret" not in repr(raw_row("key"))
    # A GET body sent back unchanged (value null) keeps the secret.
    body = api_client.get(f"{URL}key/").json()
    assert api_client.put(f"{URL}key/", body).status_code == 200
    assert NamedValue.objects.get(name="key").value == "plain-then-secret"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "bad name", "value": "x"}, "name"),
        ({"name": "..", "value": "x"}, "name"),
        ({"name": "ok", "value": "   "}, "value"),
        ({"name": "ok", "value": ""}, "value"),
        ({"name": "ok"}, "value"),
        ({"name": "ok", "value": "x" * 4097}, "value"),
        ({"name": "ok", "value": "x", "tags": "not-a-list"}, "tags"),
    ],
)
def test_invalid_named_value_is_400(api_client, data, field):
    response = api_client.post(URL, data)
    assert response.status_code == 400
    assert field in response.json()
    assert not NamedValue.objects.exists()


def test_referenced_by_backend_cannot_be_deleted(api_client):
    NamedValueFactory(name="key", value="sk", secret=True)
    BackendFactory(name="llm", credentials_header={"Authorization": "Bearer {{key}}"})
    response = api_client.delete(f"{URL}key/")
    assert response.status_code == 409
    assert "backend 'llm'" in response.json()["detail"]
    assert NamedValue.objects.filter(name="key").exists()


def test_referenced_by_policy_cannot_be_deleted(api_client):
    NamedValueFactory(name="header-value", value="v")
    api = APIFactory(name="gemini")
    set_policy(
        PolicyScopeChoices.API,
        api,
        '<policies><inbound><base/><set-header name="x-a" exists-action="override"><value>{{header-value}}</value>'
        "</set-header></inbound><backend><base/></backend><outbound><base/></outbound></policies>",
    )
    response = api_client.delete(f"{URL}header-value/")
    assert response.status_code == 409
    assert "policy of API 'gemini'" in response.json()["detail"]


def test_unreferenced_can_be_deleted(api_client):
    NamedValueFactory(name="key")
    Backend.objects.create(name="other", url="https://x.example.com", credentials_header={"a": "{{key2}}"})
    assert api_client.delete(f"{URL}key/").status_code == 204


def test_filter_by_secret_and_tag(api_client):
    NamedValueFactory(name="a", secret=True, tags=["llm"])
    NamedValueFactory(name="b", tags=["geo"])
    assert [nv["name"] for nv in api_client.get(URL, {"secret": "true"}).json()] == ["a"]
    assert [nv["name"] for nv in api_client.get(URL, {"tag": "geo"}).json()] == ["b"]
