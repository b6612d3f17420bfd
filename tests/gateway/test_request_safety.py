"""Issue #7 items 2, 3, 8 and 9 against a real gateway process, the mock model server and a lenient backend.

* bodies that token policies and JSON-reading expressions cannot read are refused with 400 (never forwarded, never
  free); usage is read from the backend's response whatever the request looked like, numbers as strings included;
* paths with dot or empty segments are refused with 400 before routing;
* the subscription key is stripped before forwarding, also where no key is required;
* an expression that throws answers APIM's generic 500.
"""

from __future__ import annotations

import json

import orjson
import pytest

from tests.fixtures_procs import mock_llm  # noqa: F401  (fixture)

from .gateway_proc import KEY, safety_gateway, sidecar, wait_for  # noqa: F401  (fixtures)
from .rawhttp import RawResponse, exchange, request_bytes

KEY_HEADER = ("Ocp-Apim-Subscription-Key", KEY)
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say hello to me"}]}


@pytest.fixture(scope="module")
def port(safety_gateway) -> int:  # noqa: F811
    return safety_gateway.port


def send(port: int, method: str, target: str | bytes, body: bytes = b"", headers=(KEY_HEADER,)) -> RawResponse:
    response = exchange(port, request_bytes(method, target, list(headers), body))
    assert response is not None, "the gateway closed the connection without answering"
    return response


def message(response: RawResponse) -> str:
    body = orjson.loads(response.body)
    assert body["statusCode"] == response.status
    return body["message"]


#
# Item 2: bodies the policies cannot read
#

BAD_BODIES = [
    pytest.param(b'{"model": "gpt-4o-mini", "messages": [], "max_tokens": NaN}', id="nan"),
    pytest.param(b'\xef\xbb\xbf{"model": "gpt-4o-mini", "messages": []}', id="bom"),
    pytest.param(b'{"messages": [{"role": "user", "content": "\\ud800"}]}', id="lone-surrogate"),
    pytest.param(b'[{"role": "user", "content": "hi"}]', id="array"),
    pytest.param(b'"just a string"', id="string"),
    pytest.param(b"{" * 2000 + b"}" * 2000, id="too-deep"),
]


@pytest.mark.parametrize("raw", BAD_BODIES)
@pytest.mark.parametrize("path", ["/llm/chat/completions", "/metric/chat/completions", "/expr/chat/completions"])
def test_a_body_the_policies_cannot_read_is_400_and_not_forwarded(port, mock_llm, path, raw):  # noqa: F811
    before = mock_llm.stats()["total"]
    response = send(port, "POST", path, raw, [KEY_HEADER, ("Content-Type", "application/json")])
    assert response.status == 400, response.body
    assert message(response).startswith("Request body is not valid JSON: ")
    assert mock_llm.stats()["total"] == before


def test_a_lone_surrogate_names_the_problem(port):
    response = send(port, "POST", "/llm/chat/completions", b'{"model": "x", "messages": "\\udc00"}')
    assert response.status == 400 and "surrogate" in message(response)


def test_usage_is_read_whatever_the_request_was(port, sidecar):  # noqa: F811
    """An OpenAI API without token policies forwards a NaN body the backend accepts: the usage it reports (counts
    given as "16" and 16.0) reaches the usage record, and Accept-Encoding is not forwarded (the gateway reads it)."""
    headers = [KEY_HEADER, ("Accept-Encoding", "gzip, br"), ("x-test-id", "nan-json")]
    response = send(port, "POST", "/lenient/chat/completions", b'{"model": "gpt-4o", "temperature": NaN}', headers)
    assert response.status == 200
    assert "accept-encoding" not in {k.lower() for k in sidecar.backend_requests[-1]["headers"]}
    headers = [KEY_HEADER, ("x-test-sse", "1")]
    streamed = send(port, "POST", "/lenient/chat/completions", b"\xef\xbb\xbf{}", headers)
    assert streamed.status == 200 and b"[DONE]" in streamed.body
    records = wait_for(lambda: [r for r in sidecar.records if r.get("api") == "lenient"] or None)
    assert records and len(records) == 2
    for record in records:
        assert (record["prompt_tokens"], record["completion_tokens"]) == (16, 16), record


def test_numeric_strings_in_the_usage_are_counted(port):
    response = send(port, "POST", "/lenient-limited/chat/completions", orjson.dumps(CHAT))
    assert response.status == 200
    assert response.header("x-consumed") == "32"  # "16" + 16.0, total "32": not 0


ODD_BODIES = [
    pytest.param({**CHAT, "messages": [{"role": "user", "content": "word " * 200_000}]}, id="huge-content"),
    pytest.param({**CHAT, "messages": [{"role": "user", "content": "hi"}] * 20_000}, id="many-messages"),
    pytest.param(b'{"messages": [{"role": "user", "content": ' + b"[" * 1000 + b"]" * 1000 + b"}]}", id="deep"),
    pytest.param(b'{"messages": ' + b'[{"content": ' * 300 + b"1" + b"}]" * 300 + b"}", id="deep-messages"),
    pytest.param({**CHAT, "messages": "hello"}, id="messages-string"),
    pytest.param({**CHAT, "messages": {"role": "user"}}, id="messages-object"),
    pytest.param({**CHAT, "messages": [5, None, "x", []]}, id="messages-items-wrong"),
    pytest.param({**CHAT, "messages": []}, id="messages-empty"),
    pytest.param({"model": "gpt-4o-mini"}, id="messages-missing"),
    pytest.param({**CHAT, "max_tokens": -5}, id="max-tokens-negative"),
    pytest.param({**CHAT, "max_tokens": 10**30}, id="max-tokens-huge"),
    pytest.param({**CHAT, "max_tokens": "100"}, id="max-tokens-string"),
    pytest.param({**CHAT, "max_tokens": 1.5e300}, id="max-tokens-float"),
    pytest.param({**CHAT, "n": 10**9, "max_tokens": 10**9}, id="n-huge"),
]


@pytest.mark.parametrize("body", ODD_BODIES)
def test_odd_model_requests_are_answered_and_accounted(port, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = send(port, "POST", "/llm/chat/completions", raw)
    assert response.status < 500, response.body
    if response.status == 200:  # the backend accepted it: the gateway settled what the backend reported
        assert response.header("x-consumed") == str(orjson.loads(response.body)["usage"]["total_tokens"])
    else:
        assert response.status in (400, 413, 422, 429)


def test_an_empty_body_is_not_refused(port, mock_llm):  # noqa: F811
    response = send(port, "GET", "/llm/models")
    assert response.status == 200


#
# Item 3: paths
#

BAD_PATHS = [
    "/llm/./chat/completions",
    "/llm/../llm/chat/completions",
    "/llm/chat/..",
    "/llm/%2e%2e/private/x",
    "/llm/%2E/chat/completions",
    "/llm/.%2e/x",
    "/llm/%252e%252e/x",
    "/llm/chat%2f..%2fmodels",
    "/llm/chat%2F%2E%2E%2Fmodels",
    "/llm/chat%5c..%5cmodels",
    "/llm/chat\\..\\models",
    "/llm/..;/x",
    "/llm//private/x",
    "//llm/chat/completions",
    "/llm/chat//completions",
    "/llm/%2f/private/x",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_dot_and_empty_segments_are_400_before_routing(port, mock_llm, path):  # noqa: F811
    before = mock_llm.stats()["total"]
    response = send(port, "GET", path)
    assert response.status == 400, (path, response.status, response.body)
    assert message(response).startswith("Invalid request path: ")
    assert mock_llm.stats()["total"] == before


@pytest.mark.parametrize("path", ["/llm/models", "/llm/models/", "/llm/.well-known/x", "/llm/a...b", "/llm/%2e%2e%2e"])
def test_paths_that_only_look_odd_are_routed(port, path):
    assert send(port, "GET", path).status != 400


#
# Item 8: the key is never forwarded
#


@pytest.mark.parametrize("key", [None, KEY, "whatever"])
def test_the_key_is_stripped_where_no_key_is_required(port, mock_llm, key):  # noqa: F811
    headers = [("Ocp-Apim-Subscription-Key", key)] if key is not None else []
    response = send(port, "GET", "/free/v1/models?a=1&subscription-key=zzz&b=2", headers=headers)
    assert response.status == 200
    last = mock_llm.stats()["last_request"]
    assert last["path"] == "/v1/models" and last["query"] == "a=1&b=2"
    assert "ocp-apim-subscription-key" not in {name.lower() for name in last["headers"]}


def test_the_key_is_stripped_where_it_is_checked(port, mock_llm):  # noqa: F811
    response = send(port, "GET", f"/llm/private/v1/models?subscription-key={KEY}", headers=[])
    assert response.status != 401
    last = mock_llm.stats()["last_request"]
    assert "subscription-key" not in last["query"]


#
# Item 9: expression failures
#


def test_an_expression_failure_is_apims_generic_500(port, mock_llm):  # noqa: F811
    before = mock_llm.stats()["total"]
    response = send(port, "POST", "/boom/chat/completions", orjson.dumps(CHAT))
    assert response.status == 500
    assert orjson.loads(response.body) == {"statusCode": 500, "message": "Internal server error."}
    assert mock_llm.stats()["total"] == before
