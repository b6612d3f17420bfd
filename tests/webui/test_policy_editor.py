"""The policy editor (Django test client): the document in the Ace editor, validation errors on their line, the
diff before saving, saving through the service and the write-time check, the effective policy, permissions and
query counts."""

import json

import pytest
from django.urls import reverse

from policies.services import get_policy, set_policy
from tests.management.factories import APIFactory, OperationFactory, ProductFactory

from .conftest import page_queries

pytestmark = pytest.mark.django_db

LIMITED = """<policies>
    <inbound>
        <base />
        <set-header name="x-team" exists-action="override"><value>blue</value></set-header>
    </inbound>
    <backend><base /></backend>
    <outbound><base /></outbound>
    <on-error><base /></on-error>
</policies>
"""


def api_url(api) -> str:
    return reverse("webui:policy", kwargs={"scope": "api", "name": api.name})


def test_editor_shows_the_document_in_the_code_editor(reader_client):
    api = APIFactory()
    page = reader_client.get(api_url(api))
    html = page.content.decode()
    assert page.status_code == 200
    assert "django_ace/ace/ace.js" in html and "django_ace/ace/mode-xml.js" in html  # from the django-ace package
    assert "inherits every section" in html
    assert "Review changes" not in html  # readers cannot write
    assert reader_client.post(api_url(api), {"value": LIMITED, "action": "save"}).status_code == 403
    detail = reader_client.get(reverse("webui:object-detail", args=["apis", api.name])).content.decode()
    assert api_url(api) in detail


def test_validation_errors_name_the_line_and_mark_it(operator_client):
    api = APIFactory()
    broken = LIMITED.replace("<outbound><base /></outbound>", "<outbound><base /><no-such-policy /></outbound>")
    page = operator_client.post(api_url(api), {"value": broken, "action": "review"})
    assert page.status_code == 400
    errors = page.context["form"].errors["value"]
    assert any("line 7" in message for message in errors), errors
    marks = json.loads(page.content.decode().split('id="policy-marks" type="application/json">')[1].split("<")[0])
    assert marks[0]["row"] == 6
    assert get_policy("api", api) is None


def test_review_shows_the_diff_then_save_stores_it(operator_client):
    api = APIFactory()
    set_policy("api", api, LIMITED)
    changed = LIMITED.replace("<value>blue</value>", "<value>green</value>")
    page = operator_client.post(api_url(api), {"value": changed, "action": "review"})
    assert page.status_code == 200
    diff = page.context["diff"]
    assert "-        <set-header" in diff and "+        <set-header" in diff and "green" in diff
    assert get_policy("api", api).value == LIMITED  # not saved by a review
    saved = operator_client.post(api_url(api), {"value": changed, "action": "save"})
    assert saved.status_code == 302
    assert get_policy("api", api).value == changed
    same = operator_client.post(api_url(api), {"value": changed, "action": "review"})
    assert same.context["diff"] == "" and "No change." in same.content.decode()


def test_save_refused_by_the_service_shows_the_message(operator_client):
    api = APIFactory()
    missing = LIMITED.replace("<value>blue</value>", "<value>{{no-such-value}}</value>")
    page = operator_client.post(api_url(api), {"value": missing, "action": "save"})
    assert page.status_code == 400
    assert page.context["form"].errors["value"] == ["line 4, column 67: named value 'no-such-value' does not exist."]


def test_effective_policy_of_an_operation(operator_client):
    api = APIFactory()
    operation = OperationFactory(api=api, name="chat")
    set_policy("api", api, LIMITED)
    url = reverse("webui:policy-operation", kwargs={"api": api.name, "name": "chat"})
    effective = operator_client.get(url).context["effective"]
    assert "x-team" in effective["xml"] and "forward-request" in effective["xml"]
    assert effective["operation"] == operation
    from_api = operator_client.get(api_url(api), {"operation": "chat"}).context["effective"]
    assert from_api["xml"] == effective["xml"]


def test_global_and_product_scopes(operator_client):
    page = operator_client.get(reverse("webui:policy-global"))
    assert page.status_code == 200 and page.context["effective"] is None
    assert "forward-request" in page.context["form"].initial["value"]  # the default global document
    product = ProductFactory()
    assert (
        operator_client.get(reverse("webui:policy", kwargs={"scope": "product", "name": product.name})).status_code
        == 200
    )
    assert operator_client.get(reverse("webui:policy", kwargs={"scope": "nope", "name": "x"})).status_code == 404


def test_policy_editor_queries_do_not_grow(operator_client):
    api = APIFactory()
    OperationFactory(api=api)
    first = page_queries(operator_client, api_url(api))
    for _ in range(30):
        OperationFactory(api=api)
    assert page_queries(operator_client, api_url(api)) == first
