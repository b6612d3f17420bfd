"""Issue #7 item 1, write time: a change commits only if the snapshot it produces loads in the gateway's loader.

Before the fix each of these writes was accepted (201/200/302) and every gateway then refused the snapshot, and every
later one, while its health said ``ok``.
"""

import pytest
from django.core.management import CommandError, call_command

from apis.models import API
from backends.models import Backend
from gateway.snapshot import check_snapshot
from gateway_admin.safety import current_problems
from gateway_admin.snapshot import build_snapshot
from named_values.models import NamedValue
from policies.choices import PolicyScopeChoices
from policies.services import set_policy

from .factories import APIFactory, BackendFactory, NamedValueFactory, OperationFactory

pytestmark = pytest.mark.django_db

AZURE_URL = "https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21"
WIZARD = "/api/apis/import-language-model/"
RATE_LIMIT = (
    '<policies><inbound><base/><rate-limit-by-key calls="{{calls}}" renewal-period="60" '
    'counter-key="@(context.Subscription.Id)"/></inbound><backend><base/></backend><outbound><base/></outbound>'
    "<on-error><base/></on-error></policies>"
)
USES_BACKEND = (
    '<policies><inbound><base/><set-backend-service backend-id="{name}"/></inbound><backend><base/></backend>'
    "<outbound><base/></outbound><on-error><base/></on-error></policies>"
)


def loads_in_the_gateway() -> None:
    token = "t" * 32
    assert check_snapshot(build_snapshot(token), gateway_token=token) == []


def api_using_backend(backend: Backend) -> API:
    api = APIFactory()
    OperationFactory(api=api)
    set_policy(PolicyScopeChoices.API, api, USES_BACKEND.format(name=backend.name))
    return api


#
# The import wizard
#


def test_wizard_accepts_an_azure_url_with_api_version_and_the_gateway_loads_it(api_client):
    response = api_client.post(
        WIZARD,
        {"display_name": "Azure", "name": "az", "url": AZURE_URL, "path": "az", "type": "openai"},
        format="json",
    )
    assert response.status_code == 201, response.content
    loads_in_the_gateway()


def test_wizard_refuses_an_access_key_ending_in_a_newline_naming_the_field(api_client):
    response = api_client.post(
        WIZARD,
        {
            "display_name": "Chat",
            "name": "chat",
            "url": "https://llm.example.com/v1",
            "path": "chat",
            "type": "openai",
            "access_key": {"header_name": "api-key", "value": "sk-123\n"},
        },
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "contains CR, LF or NUL" in response.json()["access_key"][0]
    assert not API.objects.exists() and not Backend.objects.exists() and not NamedValue.objects.exists()


#
# REST
#


def test_secret_named_value_ending_in_a_newline_is_refused_where_it_is_used(api_client):
    assert (
        api_client.post(
            "/api/named-values/", {"name": "key", "value": "sk-1\n", "secret": True}, format="json"
        ).status_code
        == 201
    )  # unused: harmless
    response = api_client.post(
        "/api/backends/",
        {"name": "b", "url": "https://b.example.com", "credentials_header": {"api-key": "{{key}}"}},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "credential header 'api-key' contains CR, LF or NUL" in response.json()["credentials_header"][0]
    assert not Backend.objects.filter(name="b").exists()


def test_changing_a_used_named_value_to_end_in_a_newline_is_refused(api_client):
    NamedValueFactory(name="key", value="sk-1", secret=True)
    BackendFactory(name="b", credentials_header={"api-key": "{{key}}"})
    response = api_client.patch("/api/named-values/key/", {"value": "sk-2\n"}, format="json")
    assert response.status_code == 400, response.content
    assert "backend 'b'" in response.json()["value"][0]
    assert NamedValue.objects.get(name="key").value == "sk-1"


def test_changing_a_named_value_that_a_validated_policy_uses_is_refused(api_client):
    NamedValueFactory(name="calls", value="10")
    api = APIFactory(name="limited")
    OperationFactory(api=api)
    response = api_client.put("/api/apis/limited/policy/", {"value": RATE_LIMIT}, format="json")
    assert response.status_code in (200, 201), response.content
    response = api_client.patch("/api/named-values/calls/", {"value": "many"}, format="json")
    assert response.status_code == 400, response.content
    assert "attribute 'calls' must be an integer" in response.json()["value"][0]
    assert NamedValue.objects.get(name="calls").plain_value == "10"
    loads_in_the_gateway()


def test_a_policy_write_that_breaks_is_400_on_value(api_client):
    api = APIFactory(name="p")
    OperationFactory(api=api)
    response = api_client.put("/api/apis/p/policy/", {"value": USES_BACKEND.format(name="ghost")}, format="json")
    assert response.status_code == 400, response.content
    assert "ghost" in str(response.json())


def test_an_existing_problem_does_not_block_other_writes_and_can_be_repaired(api_client):
    BackendFactory(name="bad")
    Backend.objects.filter(name="bad").update(url="https://h/x#fragment")  # by hand, bypassing every check
    assert [p.kind for p in current_problems()] == ["backend"]
    assert (
        api_client.post("/api/backends/", {"name": "ok", "url": "https://ok.example"}, format="json").status_code == 201
    )
    response = api_client.patch("/api/backends/bad/", {"url": "https://h/x"}, format="json")
    assert response.status_code == 200, response.content
    loads_in_the_gateway()


def test_check_config_command_names_the_problem():
    BackendFactory(name="bad")
    Backend.objects.filter(name="bad").update(url="https://h/x#fragment")
    with pytest.raises(CommandError, match="backend 'bad'"):
        call_command("check_config")


#
# Django admin (it bypasses the services and the REST serializers)
#


@pytest.fixture
def admin_client_logged_in(client, admin_user):
    client.force_login(admin_user)
    return client


def test_admin_delete_of_a_referenced_backend_is_refused(admin_client_logged_in):
    backend = BackendFactory(name="used")
    api_using_backend(backend)
    response = admin_client_logged_in.post(f"/admin/backends/backend/{backend.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert Backend.objects.filter(name="used").exists()
    page = admin_client_logged_in.get(response["Location"])
    assert "unknown backend" in page.content.decode()
    loads_in_the_gateway()


def test_admin_bulk_delete_of_a_referenced_backend_is_refused(admin_client_logged_in):
    backend = BackendFactory(name="used")
    api_using_backend(backend)
    admin_client_logged_in.post(
        "/admin/backends/backend/", {"action": "delete_selected", "_selected_action": [backend.pk], "post": "yes"}
    )
    assert Backend.objects.filter(name="used").exists()
    loads_in_the_gateway()


def test_admin_rename_of_a_referenced_backend_is_refused(admin_client_logged_in):
    backend = BackendFactory(name="used", url="https://used.example")
    api_using_backend(backend)
    admin_client_logged_in.post(
        f"/admin/backends/backend/{backend.pk}/change/",
        {"name": "renamed", "url": "https://used.example", "description": "", "credentials_header": "{}",
         "credentials_query": "{}"},
    )  # fmt: skip
    assert Backend.objects.filter(name="used").exists() and not Backend.objects.filter(name="renamed").exists()
    loads_in_the_gateway()


def test_admin_delete_of_a_referenced_named_value_is_refused(admin_client_logged_in):
    named_value = NamedValueFactory(name="key", value="sk-1", secret=True)
    BackendFactory(name="b", credentials_header={"api-key": "{{key}}"})
    admin_client_logged_in.post(f"/admin/named_values/namedvalue/{named_value.pk}/delete/", {"post": "yes"})
    assert NamedValue.objects.filter(name="key").exists()
    loads_in_the_gateway()


def test_admin_unrelated_change_still_works(admin_client_logged_in):
    backend = BackendFactory(name="free", url="https://free.example")
    response = admin_client_logged_in.post(f"/admin/backends/backend/{backend.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Backend.objects.filter(name="free").exists()


def test_an_existing_problem_located_by_index_does_not_block_a_write_that_shifts_it(api_client):
    NamedValueFactory(name="m-value", value="x")
    NamedValue.objects.filter(name="m-value").update(name="m value")  # an invalid name, set by hand
    assert [p.kind for p in current_problems()] == ["named_value"]
    response = api_client.post("/api/named-values/", {"name": "a-first", "value": "y"}, format="json")
    assert response.status_code == 201, response.content  # sorts before it: the bad row's index moves
