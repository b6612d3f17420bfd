"""Object pages through Django's test client: login, permissions (Operators and Readers), edits through the REST
serializers and the write-time snapshot check, reveal with its audit record, key regeneration, and query counts."""

import pytest
from django.urls import reverse

from apis.models import API
from gateway_admin.models import RevealRecord
from subscriptions.models import Subscription
from tests.management.factories import (
    APIFactory,
    BackendFactory,
    BlocklistFactory,
    NamedValueFactory,
    OperationFactory,
    ProductFactory,
    SubscriptionFactory,
)

from .conftest import page_queries

pytestmark = pytest.mark.django_db


def list_url(kind: str) -> str:
    return reverse("webui:object-list", kwargs={"kind": kind})


def page_url(page: str, kind: str, obj) -> str:
    kwargs = {"api": obj.api.name, "name": obj.name} if kind == "operations" else {"name": obj.name}
    return reverse(f"webui:object-{page}", kwargs={"kind": kind, **kwargs})


def make(kind: str):
    factories = {
        "apis": lambda: APIFactory(),
        "operations": lambda: OperationFactory(),
        "backends": lambda: BackendFactory(),
        "blocklists": lambda: BlocklistFactory(),
        "named-values": lambda: NamedValueFactory(secret=True),
        "products": lambda: ProductFactory(apis=[APIFactory()]),
        "subscriptions": lambda: SubscriptionFactory(api=APIFactory()),
    }
    return factories[kind]()


KINDS = ("apis", "operations", "backends", "blocklists", "named-values", "products", "subscriptions")


#
# Login and permissions
#


def test_every_page_needs_a_login(client):
    api = APIFactory(name="x")
    for url in (reverse("webui:index"), reverse("webui:import"), list_url("apis"), page_url("detail", "apis", api)):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("webui:login"))


def test_login_page_logs_in(client, operator):
    response = client.post(reverse("webui:login"), {"username": "olivia", "password": "olivia-password"})
    assert response.status_code == 302
    assert client.get(reverse("webui:index")).status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_reader_reads_but_cannot_edit_or_delete(reader_client, kind):
    obj = make(kind)
    assert reader_client.get(list_url(kind)).status_code == 200
    detail = reader_client.get(page_url("detail", kind, obj))
    assert detail.status_code == 200
    assert b">Edit<" not in detail.content
    for page in ("edit", "delete"):
        assert reader_client.get(page_url(page, kind, obj)).status_code == 403
        assert reader_client.post(page_url(page, kind, obj), {}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()


@pytest.mark.parametrize("kind", ["named-values", "subscriptions"])
def test_reader_cannot_reveal(reader_client, kind):
    obj = make(kind)
    assert b"Reveal" not in reader_client.get(page_url("detail", kind, obj)).content
    assert reader_client.post(page_url("reveal", kind, obj)).status_code == 403
    assert not RevealRecord.objects.exists()


def test_reader_cannot_import_or_regenerate(reader_client):
    subscription = SubscriptionFactory()
    before = subscription.primary_key_hash
    assert reader_client.get(reverse("webui:import")).status_code == 403
    url = reverse(
        "webui:object-regenerate", kwargs={"kind": "subscriptions", "name": subscription.name, "which": "primary"}
    )
    assert reader_client.post(url).status_code == 403
    subscription.refresh_from_db()
    assert subscription.primary_key_hash == before


#
# Writes
#


def test_edit_goes_through_the_serializer(operator_client):
    api = APIFactory(name="gemini", path="gemini")
    APIFactory(name="other", path="taken")
    form = {
        "display_name": "Gemini",
        "description": "",
        "path": "taken",
        "service_url": "https://example.com/v1",
        "api_type": "openai",
        "subscription_key_header": "Ocp-Apim-Subscription-Key",
        "subscription_key_query": "subscription-key",
    }
    response = operator_client.post(page_url("edit", "apis", api), form)
    assert response.status_code == 400
    assert "path" in response.context["form"].errors
    api.refresh_from_db()
    assert api.path == "gemini"

    response = operator_client.post(page_url("edit", "apis", api), {**form, "path": "gemini/v2"})
    assert response.status_code == 302
    api.refresh_from_db()
    assert api.path == "gemini/v2"


def test_edit_refused_by_the_write_time_check_shows_the_field_error(operator_client):
    """A backend credential referencing a named value that does not exist: the gateway could not load it."""
    backend = BackendFactory(name="b")
    response = operator_client.post(
        page_url("edit", "backends", backend),
        {"url": "https://example.com/v1", "description": "", "credentials_header": '{"api-key": "{{missing}}"}'},
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "credentials_header" in errors, errors
    backend.refresh_from_db()
    assert backend.credentials_header == {}


def test_delete_refused_by_a_service_shows_the_message(operator_client):
    named_value = NamedValueFactory(name="k", secret=True)
    BackendFactory(credentials_header={"api-key": "{{k}}"})
    response = operator_client.post(page_url("delete", "named-values", named_value), follow=True)
    assert "referenced by" in response.content.decode()
    assert type(named_value).objects.filter(pk=named_value.pk).exists()


def test_delete(operator_client):
    backend = BackendFactory()
    response = operator_client.post(page_url("delete", "backends", backend))
    assert response.status_code == 302
    assert not type(backend).objects.filter(pk=backend.pk).exists()


#
# Secrets
#


def test_secrets_are_dots_until_revealed_and_the_reveal_is_audited(operator_client, operator):
    named_value = NamedValueFactory(name="openai-key", value="sk-very-secret-value", secret=True)
    detail = operator_client.get(page_url("detail", "named-values", named_value)).content.decode()
    assert "sk-very-secret-value" not in detail
    assert "••••••••" in detail
    confirm = operator_client.get(page_url("reveal", "named-values", named_value)).content.decode()
    assert "sk-very-secret-value" not in confirm
    assert not RevealRecord.objects.exists()

    revealed = operator_client.post(page_url("reveal", "named-values", named_value))
    assert "sk-very-secret-value" in revealed.content.decode()
    assert "no-store" in revealed["Cache-Control"]
    record = RevealRecord.objects.get()
    assert (record.user, record.kind, record.name, record.channel) == (operator, "named_value", "openai-key", "ui")


def test_subscription_keys_masked_revealed_and_regenerated(operator_client):
    subscription = SubscriptionFactory(name="team-a")
    old_primary, secondary = subscription.primary_key, subscription.secondary_key
    detail = operator_client.get(page_url("detail", "subscriptions", subscription)).content.decode()
    assert old_primary not in detail and secondary not in detail

    url = reverse("webui:object-regenerate", kwargs={"kind": "subscriptions", "name": "team-a", "which": "primary"})
    assert operator_client.post(url).status_code == 302
    subscription = Subscription.objects.get(pk=subscription.pk)
    assert subscription.primary_key != old_primary
    assert subscription.secondary_key == secondary

    revealed = operator_client.post(page_url("reveal", "subscriptions", subscription)).content.decode()
    assert subscription.primary_key in revealed and secondary in revealed
    assert RevealRecord.objects.get().kind == "subscription"


def test_rest_reveal_is_audited_too(api_client):
    subscription = SubscriptionFactory(name="team-b")
    assert api_client.post(f"/api/subscriptions/{subscription.name}/list-secrets/").status_code == 200
    assert RevealRecord.objects.get().channel == "rest"


#
# Lists
#


def test_list_search_filter_and_pages(operator_client):
    for n in range(30):
        APIFactory(name=f"model-{n:02}", path=f"m{n}", api_type="passthrough" if n % 3 == 0 else "openai")
    page = operator_client.get(list_url("apis"), {"q": "model-1", "api_type": "", "name": ""})
    assert page.status_code == 200
    assert page.context["page"].paginator.count == 10
    filtered = operator_client.get(list_url("apis"), {"api_type": "passthrough"})
    assert filtered.context["page"].paginator.count == 10
    open_ones = operator_client.get(list_url("apis"), {"subscription_required": "false"})
    assert open_ones.context["page"].paginator.count == 0
    assert '<option value="false" selected>No</option>' in open_ones.content.decode()
    first = operator_client.get(list_url("apis"))
    assert first.context["page"].paginator.num_pages == 2
    second = operator_client.get(list_url("apis"), {"page": 2})
    assert len(second.context["rows"]) == 5
    assert API.objects.count() == 30


@pytest.mark.parametrize("kind", KINDS)
def test_no_n_plus_one_on_lists_and_details(operator_client, kind):
    first = make(kind)
    one_list, one_detail = (
        page_queries(operator_client, list_url(kind)),
        page_queries(operator_client, page_url("detail", kind, first)),
    )
    for _ in range(29):
        make(kind)
    if kind == "apis":
        for _ in range(5):
            OperationFactory(api=first)
    assert page_queries(operator_client, list_url(kind)) == one_list
    assert page_queries(operator_client, page_url("detail", kind, first)) == one_detail


def test_htmx_comes_from_its_package():
    """htmx is served from the django-htmx package (webui.staticfiles.PackageFileFinder), listed for collectstatic."""
    from django.contrib.staticfiles import finders

    from webui.staticfiles import PackageFileFinder

    found = finders.find("vendor/htmx/htmx-2.min.js")
    assert found and "django_htmx" in found
    assert "htmx-2.min.js" in [name for name, _storage in PackageFileFinder().list([])]


def test_list_page_loads_htmx_and_marks_its_live_parts(operator_client):
    body = operator_client.get(list_url("apis")).content.decode()
    assert "/static/vendor/htmx/htmx-2.min.js" in body
    assert 'hx-select="#results"' in body and 'id="count" role="status"' in body


def test_api_detail_shows_where_clients_call_it(operator_client, settings):
    settings.SLUICE = {**settings.SLUICE, "GATEWAY_URL": "https://gateway.example.com/"}
    api = APIFactory(name="chat", path="chat/v1")
    page = operator_client.get(reverse("webui:object-detail", kwargs={"kind": "apis", "name": api.name}))
    assert "https://gateway.example.com/chat/v1" in page.content.decode()
