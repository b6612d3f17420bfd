"""`GET /api/apis/{name}/operations/{op}/effective-policy/`: every scope's document with `<base/>` expanded."""

import pytest

from gateway.policy import parse_tree, to_xml
from policies.services import DEFAULT_GLOBAL_POLICY

from .factories import APIFactory, OperationFactory, ProductFactory

pytestmark = pytest.mark.django_db

URL = "/api/apis/aoai/operations/chat/effective-policy/"
GLOBAL = (
    "<policies><inbound><set-header name='x-global'><value>g</value></set-header></inbound>"
    "<backend><forward-request timeout='60'/></backend><outbound/><on-error/></policies>"
)
PRODUCT = "<policies><inbound><base/><set-header name='x-product'><value>p</value></set-header></inbound></policies>"
API = (
    "<policies><inbound><set-header name='x-api-first'><value>a</value></set-header><base/></inbound>"
    "<outbound><base/><set-status code='201'/></outbound></policies>"
)
OPERATION = (
    "<policies><inbound><base/><choose><when condition='@(context.Request.MatchedParameters[&quot;deployment-id&quot;]"
    " == &quot;gpt-4o&quot;)'><set-header name='x-op'><value>o</value></set-header></when></choose></inbound>"
    "<on-error><return-response><set-status code='500'/></return-response></on-error></policies>"
)


@pytest.fixture
def urls(db):
    api = APIFactory(name="aoai")
    OperationFactory(api=api, name="chat", url_template="/deployments/{deployment-id}/chat/completions")
    ProductFactory(name="gold", apis=[api])
    ProductFactory(name="other")
    return {
        "global": "/api/policies/global/",
        "product": "/api/products/gold/policy/",
        "api": "/api/apis/aoai/policy/",
        "operation": "/api/apis/aoai/operations/chat/policy/",
    }


def put_all(client, urls):
    for scope, value in (("global", GLOBAL), ("product", PRODUCT), ("api", API), ("operation", OPERATION)):
        assert client.put(urls[scope], {"value": value}).status_code == 201


def test_without_documents_it_is_the_default_global_policy(api_client, urls):
    response = api_client.get(URL)
    assert response.status_code == 200
    assert response.json()["format"] == "xml"
    assert to_xml(parse_tree(response.json()["value"])) == to_xml(parse_tree(DEFAULT_GLOBAL_POLICY))


def test_base_is_expanded_through_every_scope(api_client, urls):
    put_all(api_client, urls)
    tree = parse_tree(api_client.get(URL).json()["value"])
    sections = {section.tag: section for section in tree.children}
    assert list(sections) == ["inbound", "backend", "outbound", "on-error"]
    inbound = sections["inbound"].children
    # API: x-api-first, then <base/> = global's x-global (no product context), then the operation's choose
    assert [(el.tag, el.attrs.get("name")) for el in inbound] == [
        ("set-header", "x-api-first"),
        ("set-header", "x-global"),
        ("choose", None),
    ]
    assert "base" not in {el.tag for el in tree.iter()}
    assert [el.attrs for el in sections["backend"].children] == [{"timeout": "60"}]
    assert [el.tag for el in sections["outbound"].children] == ["set-status"]
    assert [el.tag for el in sections["on-error"].children] == ["return-response"]


def test_product_context(api_client, urls):
    put_all(api_client, urls)
    tree = parse_tree(api_client.get(URL + "?product=gold").json()["value"])
    names = [el.attrs.get("name") for el in tree.children[0].children]
    assert names == ["x-api-first", "x-global", "x-product", None]
    response = api_client.get(URL + "?product=other")
    assert response.status_code == 400
    assert response.json() == {"product": ["Product 'other' does not exist or does not contain API 'aoai'."]}


def test_rawxml_export_of_the_effective_policy(api_client, urls):
    put_all(api_client, urls)
    response = api_client.get(URL + "?format=rawxml")
    assert response.json()["format"] == "rawxml"
    raw = response.json()["value"]
    assert 'condition="@(context.Request.MatchedParameters["deployment-id"] == "gpt-4o")"' in raw
    assert to_xml(parse_tree(raw, "rawxml")) == to_xml(parse_tree(api_client.get(URL).json()["value"]))


def test_forward_request_is_shown_when_no_scope_forwards(api_client, urls):
    api_client.put(urls["global"], {"value": "<policies><inbound/><backend/></policies>"})
    tree = parse_tree(api_client.get(URL).json()["value"])
    assert [(s.tag, [c.tag for c in s.children]) for s in tree.children] == [
        ("inbound", []),
        ("backend", ["forward-request"]),
    ]
    api_client.put(urls["global"], {"value": "<policies><outbound/></policies>"})
    tree = parse_tree(api_client.get(URL).json()["value"])
    assert [s.tag for s in tree.children] == ["backend", "outbound"]


def test_unknown_api_or_operation_is_404(api_client, urls):
    assert api_client.get("/api/apis/nope/operations/chat/effective-policy/").status_code == 404
    assert api_client.get("/api/apis/aoai/operations/nope/effective-policy/").status_code == 404


def test_only_get(api_client, urls):
    assert api_client.put(URL, {"value": GLOBAL}).status_code == 405


def test_requires_an_administrator(anon_client, urls):
    assert anon_client.get(URL).status_code in (401, 403)
