"""The subscription decision procedure of apim-spec 6.4, branch by branch, through the app handler."""

from __future__ import annotations

import orjson
import pytest

from gateway.app import create_app
from gateway.errors import MSG_INVALID_KEY, MSG_MISSING_KEY
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot
from gateway.subscription import split_query_param

from .fakes import FakePool, header, make_request
from .helpers import KEYS, TOKEN, base_snapshot

KEY_HEADER = b"ocp-apim-subscription-key"


def product_marker(name: str) -> str:
    header = f'<set-header name="x-product"><value>{name}</value></set-header>'
    return f"<policies><inbound><base/>{header}</inbound></policies>"


@pytest.fixture
def gateway():
    data = base_snapshot()
    for product in data["products"]:
        product["policy"] = product_marker(product["name"])
    pool = FakePool()
    app = create_app(GatewaySettings(gateway_token=TOKEN), pool=pool)
    app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    return app, pool


async def call(gateway, path, *, key=None, query="", headers=()):
    app, pool = gateway
    hdrs = list(headers)
    if key is not None:
        hdrs.append((KEY_HEADER, key.encode()))
    before = len(pool.calls)
    response = await app(make_request("GET", path, query, hdrs))
    forwarded = pool.calls[-1] if len(pool.calls) > before else None
    return response, forwarded


def assert_denied(response, message):
    assert response.status == 401
    assert orjson.loads(response.body) == {"statusCode": 401, "message": message}
    assert header(response, b"content-type").startswith(b"application/json")
    assert header(response, b"x-request-id")


async def test_missing_key_is_401_missing(gateway):
    response, forwarded = await call(gateway, "/llm/chat/x")
    assert_denied(response, MSG_MISSING_KEY)
    assert forwarded is None


@pytest.mark.parametrize(
    ("key", "product"),
    [
        (KEYS["master"][0], None),  # scope /apis
        (KEYS["master"][1], None),  # secondary key
        (KEYS["chat-only"][0], None),  # scope /apis/chat
        (KEYS["starter-sub"][0], b"starter"),  # published product containing the API: product context
    ],
)
async def test_valid_active_in_scope_key_is_allowed(gateway, key, product):
    response, forwarded = await call(gateway, "/llm/chat/x", key=key)
    assert response.status == 200
    assert forwarded.header(b"x-product") == product
    assert forwarded.header(KEY_HEADER) is None


@pytest.mark.parametrize(
    "key",
    [
        KEYS["other-api-sub"][0],  # scope is another API
        KEYS["hidden-sub"][0],  # product not published
        KEYS["suspended-sub"][0],  # not active (apim-spec 6.4 GAP: treated as invalid)
        "no-such-key",
    ],
)
async def test_invalid_inactive_or_out_of_scope_key_is_401_invalid(gateway, key):
    response, forwarded = await call(gateway, "/llm/chat/x", key=key)
    assert_denied(response, MSG_INVALID_KEY)
    assert forwarded is None


async def test_key_in_query_when_header_absent_and_stripped(gateway):
    key = KEYS["master"][0]
    response, forwarded = await call(gateway, "/llm/chat/x", query=f"a=1&subscription-key={key}&b=%20x&b=2")
    assert response.status == 200
    assert forwarded.target == "/base/x?a=1&b=%20x&b=2"


async def test_empty_header_falls_back_to_query(gateway):
    response, _ = await call(gateway, "/llm/chat/x", key="", query=f"subscription-key={KEYS['master'][0]}")
    assert response.status == 200


async def test_header_wins_over_query_and_both_are_stripped(gateway):
    response, forwarded = await call(gateway, "/llm/chat/x", key=KEYS["master"][0], query="subscription-key=bogus&q=1")
    assert response.status == 200
    assert forwarded.target == "/base/x?q=1"
    response, _ = await call(gateway, "/llm/chat/x", key="bogus", query=f"subscription-key={KEYS['master'][0]}")
    assert_denied(response, MSG_INVALID_KEY)


async def test_open_product_without_key_uses_its_context(gateway):
    response, forwarded = await call(gateway, "/open/x")
    assert response.status == 200
    assert forwarded.header(b"x-product") == b"open"


async def test_open_product_with_invalid_key_proceeds_as_without_key(gateway):
    response, forwarded = await call(gateway, "/open/x", key="no-such-key")
    assert response.status == 200
    assert forwarded.header(b"x-product") == b"open"
    assert forwarded.header(KEY_HEADER) is None


async def test_open_product_with_valid_key_uses_the_subscription_context(gateway):
    response, forwarded = await call(gateway, "/open/x", key=KEYS["master"][0])
    assert response.status == 200
    assert forwarded.header(b"x-product") is None


@pytest.mark.parametrize("key", [None, "anything", KEYS["master"][0]])
async def test_api_without_subscription_requirement_ignores_keys(gateway, key):
    response, forwarded = await call(gateway, "/free/x", key=key, query="subscription-key=zzz")
    assert response.status == 200
    assert forwarded.header(b"x-product") is None
    # issue #7 item 8: the key header and query parameter never reach the backend, even when nobody checks them
    assert forwarded.target == "/base/x"
    assert forwarded.header(KEY_HEADER) is None


def test_split_query_param_keeps_the_rest_byte_for_byte():
    assert split_query_param("", "k") == (None, "")
    assert split_query_param("a=1&b=2", "k") == (None, "a=1&b=2")
    assert split_query_param("k=v1&a=%2F&k=v2&&x", "k") == ("v1", "a=%2F&&x")
    assert split_query_param("kk=1&k=abc%3D", "k") == ("abc=", "kk=1")


def test_messages_are_the_apim_texts():
    assert MSG_MISSING_KEY == (
        "Access denied due to missing subscription key. Make sure to include subscription key when making requests "
        "to an API."
    )
    assert MSG_INVALID_KEY == (
        "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
    )


async def test_x_forwarded_for_is_appended_and_hop_by_hop_dropped(gateway):
    response, forwarded = await call(
        gateway,
        "/free/x",
        headers=[
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"connection", b"keep-alive, x-hop"),
            (b"x-hop", b"drop me"),
            (b"te", b"trailers"),
            (b"host", b"gateway.example"),
            (b"x-end", b"kept"),
        ],
    )
    assert response.status == 200
    assert forwarded.header(b"x-forwarded-for") == b"1.2.3.4, 10.0.0.1"
    names = [name for name, _ in forwarded.headers]
    assert names == [b"x-end", b"x-forwarded-for"]
