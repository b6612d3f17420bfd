"""Policy formats on the REST API: `rawxml` accepted on PUT (stored as `xml`), `?format=rawxml` on GET, errors at
the line and column of the text as sent, unsupported policies, and expressions checked after named values."""

from pathlib import Path

import pytest

from gateway.policy import parse_document, rawxml_to_xml, to_xml
from policies.models import Policy

from .factories import APIFactory, BackendFactory, NamedValueFactory, OperationFactory

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "policies"
RAW = (FIXTURES / "choose-deployment.raw.xml").read_text()
XML = (FIXTURES / "choose-deployment.xml").read_text()
URL = "/api/apis/aoai/policy/"


@pytest.fixture
def api(db):
    api = APIFactory(name="aoai")
    OperationFactory(api=api, name="chat", url_template="/deployments/{deployment-id}/chat/completions")
    BackendFactory(name="openai-backend")
    return api


def test_rawxml_is_stored_as_xml_and_exported_as_written(api_client, api):
    response = api_client.put(URL, {"format": "rawxml", "value": RAW})
    assert response.status_code == 201, response.content
    stored = Policy.objects.get()
    assert stored.format == "xml" and stored.value == rawxml_to_xml(RAW)
    assert response.json() == {"format": "xml", "value": stored.value}
    assert "&quot;deployment-id&quot;" in stored.value
    assert api_client.get(URL).json() == {"format": "xml", "value": stored.value}
    assert api_client.get(URL + "?format=xml").json()["value"] == stored.value
    assert api_client.get(URL + "?format=rawxml").json() == {"format": "rawxml", "value": RAW}


def test_both_forms_store_the_same_document(api_client, api):
    assert api_client.put(URL, {"format": "xml", "value": XML}).status_code == 201
    from_xml = Policy.objects.get().value
    assert api_client.put(URL, {"format": "rawxml", "value": RAW}).status_code == 200
    from_raw = Policy.objects.get().value
    assert to_xml(parse_document(from_xml, "api").root) == to_xml(parse_document(from_raw, "api").root)


def test_raw_document_sent_as_xml_is_malformed(api_client, api):
    response = api_client.put(URL, {"format": "xml", "value": RAW})
    assert response.status_code == 400
    assert response.json()["value"][0].startswith("line 6, column ")
    assert "malformed XML" in response.json()["value"][0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            '<policies>\n  <inbound>\n    <set-variable name="v" value="@(context.Request.Headers["a"].Nope)" />\n'
            "  </inbound>\n</policies>",
            "line 3, column 66: <set-variable> attribute 'value': invalid policy expression: ",
        ),
        (
            '<policies><inbound>\n<choose><when condition="@(1 < 2)">\n  <forward-request/></when></choose>'
            "</inbound></policies>",
            "line 3, column 3: <forward-request> is not allowed in the inbound section",
        ),
        (
            '<policies><inbound>\n<set-header name="x"><value>@("unterminated)</value></set-header>'
            "</inbound></policies>",
            "line 2, column 29: unterminated policy expression",
        ),
    ],
)
def test_rawxml_errors_have_the_position_as_sent(api_client, api, value, message):
    response = api_client.put(URL, {"format": "rawxml", "value": value})
    assert response.status_code == 400
    assert response.json()["value"][0].startswith(message), response.json()
    assert not Policy.objects.exists()


def test_managed_identity_is_refused_with_the_alternative(api_client, api):
    response = api_client.put(URL, {"format": "xml", "value": (FIXTURES / "managed-identity.xml").read_text()})
    assert response.status_code == 400
    message = response.json()["value"][0]
    assert message.startswith("line 5, column 9: policy <authentication-managed-identity> cannot work outside Azure")
    assert "named value" in message


def test_known_apim_policy_is_not_supported_yet(api_client, api):
    response = api_client.put(URL, {"value": "<policies><inbound>\n  <cors/>\n</inbound></policies>"})
    assert response.json() == {"value": ["line 2, column 3: policy <cors> is not supported by Sluice yet"]}


def test_references_inside_choose_and_rawxml_positions(api_client, api):
    value = (
        '<policies><inbound>\n<choose><when condition="@("a" == "b")">'
        '<set-backend-service backend-id="missing"/></when></choose>\n'
        '<set-header name="x"><value>@("{{missing-nv}}")</value></set-header></inbound></policies>'
    )
    messages = api_client.put(URL, {"format": "rawxml", "value": value}).json()["value"]
    assert "line 3, column 32: named value 'missing-nv' does not exist." in messages
    assert "line 2, column 41: backend 'missing' does not exist." in messages


def test_named_values_are_checked_inside_expressions_once_substituted(api_client, api):
    NamedValueFactory(name="threshold", value="5")
    NamedValueFactory(name="broken", value='x")')
    good = '<policies><inbound><set-variable name="t" value="@({{threshold}} + 1)"/></inbound></policies>'
    assert api_client.put(URL, {"format": "rawxml", "value": good}).status_code == 201
    bad = '<policies><inbound><set-variable name="t" value="@(&quot;{{broken}}&quot;)"/></inbound></policies>'
    response = api_client.put(URL, {"value": bad})
    assert response.status_code == 400
    # the value's `")` ends the string early: the quote after the reference no longer closes one
    assert response.json()["value"][0] == (
        "line 1, column 68: <set-variable> attribute 'value': invalid policy expression: unterminated string literal"
    )


def test_unknown_get_format_is_400(api_client, api):
    api_client.put(URL, {"value": XML})
    assert api_client.get(URL + "?format=json").status_code == 400
    assert api_client.get(URL + "?format=rawxml-link").json() == {
        "format": ["Unknown policy format 'rawxml-link' (expected xml or rawxml)."]
    }


def test_global_policy_formats(api_client):
    raw = (
        '<policies><inbound><set-header name="x"><value>@(context.Request.Headers.GetValueOrDefault("a", "b"))'
        "</value></set-header></inbound><backend><forward-request/></backend></policies>"
    )
    assert api_client.put("/api/policies/global/", {"format": "rawxml", "value": raw}).status_code == 201
    assert api_client.get("/api/policies/global/?format=rawxml").json()["value"] == raw
    assert "&quot;" not in api_client.get("/api/policies/global/").json()["value"]  # text needs no escaping
