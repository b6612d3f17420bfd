"""Backends: CRUD, URL and credentials validation, references to named values, delete protection."""

import pytest

from backends.models import Backend
from policies.choices import PolicyScopeChoices
from policies.services import set_policy

from .crud import CRUDTests
from .factories import APIFactory, BackendFactory, NamedValueFactory

pytestmark = pytest.mark.django_db

URL = "/api/backends/"


class TestBackendCRUD(CRUDTests):
    base_url = URL
    model = Backend
    factory = BackendFactory
    create_data = {
        "name": "gemini-backend",
        "url": "https://generativelanguage.googleapis.com/v1beta/openai",
        "credentials_header": {"Authorization": "{{gemini-key}}"},
    }
    update_data = {"url": "http://ollama:11434/v1", "description": "local", "credentials_query": {"key": "{{q}}"}}
    patch_data = {"description": "patched"}

    def prepare(self):
        NamedValueFactory(name="gemini-key", secret=True)
        NamedValueFactory(name="q")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "b", "url": "ftp://example.com"}, "url"),
        ({"name": "b", "url": "https://"}, "url"),
        ({"name": "b", "url": "not a url"}, "url"),
        ({"name": "b", "url": "https://example.com:99999/"}, "url"),
        ({"name": "b", "url": "/relative"}, "url"),
        (
            {"name": "b", "url": "https://x.example.com", "credentials_header": {"bad header": "v"}},
            "credentials_header",
        ),
        ({"name": "b", "url": "https://x.example.com", "credentials_header": {"a": 1}}, "credentials_header"),
        ({"name": "b", "url": "https://x.example.com", "credentials_header": ["a"]}, "credentials_header"),
        ({"name": "b", "url": "https://x.example.com", "credentials_query": {"k": "{{missing}}"}}, "credentials_query"),
        ({"name": "-b", "url": "https://x.example.com"}, "name"),
    ],
)
def test_invalid_backend_is_400(api_client, data, field):
    response = api_client.post(URL, data)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Backend.objects.exists()


def test_unknown_named_value_is_named(api_client):
    response = api_client.post(
        URL, {"name": "b", "url": "https://x.example.com", "credentials_header": {"api-key": "{{nope}}"}}
    )
    assert response.status_code == 400
    assert "nope" in response.json()["credentials_header"][0]


def test_single_label_host_is_accepted(api_client):
    assert api_client.post(URL, {"name": "b", "url": "http://mockllm:8000/v1"}).status_code == 201


def test_backend_routed_to_by_a_policy_cannot_be_deleted(api_client):
    BackendFactory(name="llm")
    api = APIFactory(name="chat")
    set_policy(
        PolicyScopeChoices.API,
        api,
        '<policies><inbound><base/><set-backend-service backend-id="llm"/></inbound></policies>',
    )
    response = api_client.delete(f"{URL}llm/")
    assert response.status_code == 409
    assert "policy of API 'chat'" in response.json()["detail"]
    assert Backend.objects.filter(name="llm").exists()
