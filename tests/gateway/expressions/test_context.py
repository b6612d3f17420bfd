"""The adapter from RequestContext to APIM's context object model."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from gateway.context import ResponseHead
from gateway.expressions import compile_expression, jsonlib

from .fakes import FakeServices, make_api, make_ctx


def run(text: str, ctx: Any) -> Any:
    return compile_expression(text).evaluate(ctx)


@pytest.fixture
def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = orjson.loads

    def counting(data: Any) -> Any:
        calls[0] += 1
        return real(data)

    monkeypatch.setattr(jsonlib.orjson, "loads", counting)
    return calls


def test_body_is_parsed_once_per_request(count_parses: list[int]) -> None:
    model = compile_expression('@((string)context.Request.Body.As<JObject>(preserveContent: true)["model"])')
    stream = compile_expression('@(context.Request.Body.As<JObject>()["stream"].Value<bool>())')
    ctx = make_ctx()
    assert model.evaluate(ctx) == "gpt-4o"
    assert stream.evaluate(ctx) is False
    assert model.evaluate(ctx) == "gpt-4o"
    assert count_parses[0] == 1
    other = make_ctx(body={"model": "o3"})
    assert model.evaluate(other) == "o3"
    assert count_parses[0] == 2


def test_body_parsed_by_the_llm_exchange_is_reused(count_parses: list[int]) -> None:
    ctx = make_ctx()
    ctx.llm = SimpleNamespace(raw=ctx.request.body, body={"model": "from-exchange"})  # type: ignore[assignment]
    assert run('@((string)context.Request.Body.As<JObject>(true)["model"])', ctx) == "from-exchange"
    assert count_parses[0] == 0
    ctx.request.body = b'{"model": "replaced by set-body"}'
    assert run('@((string)context.Request.Body.As<JObject>(true)["model"])', ctx) == "replaced by set-body"


def test_body_is_not_consumed_without_preserve_content() -> None:
    ctx = make_ctx()
    before = ctx.request.body
    assert run("@(context.Request.Body.As<string>())", ctx) == before.decode()
    assert ctx.request.body is before


def test_nothing_is_read_unless_touched() -> None:
    class Exploding:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"read {name}")

    ctx = make_ctx(request=Exploding(), services=Exploding())
    assert run("@(context.Subscription.Id + context.Api.Name)", ctx) == "sub-42azure-openai"


def test_subscription_and_product_absent() -> None:
    ctx = make_ctx(subscription=None, product=None)
    assert run("@(context.Subscription == null && context.Product == null)", ctx) is True
    assert run('@(context.Subscription?.Id ?? "anonymous")', ctx) == "anonymous"


def test_subscription_key_from_query_when_no_header() -> None:
    ctx = make_ctx(headers=[(b"host", b"gw")], query="subscription-key=qk%2B1&api-version=1")
    assert run("@(context.Subscription.Key)", ctx) == "qk+1"


def test_product_members() -> None:
    ctx = make_ctx()
    assert run("@(context.Product.State == ProductState.Published)", ctx) is True
    assert run("@(context.Product.State.ToString() + context.Product.SubscriptionRequired)", ctx) == "PublishedTrue"


def test_urls() -> None:
    ctx = make_ctx(
        headers=[(b"host", b"gw.example.com"), (b"x-forwarded-proto", b"https")], query="subscription-key=k&a=1&a=2&B=x"
    )
    ctx.query = "a=1&a=2&B=x"
    url = "@(context.Request.Url.ToString())"
    assert run(url, ctx) == "https://gw.example.com/openai/deployments/gpt-4o/chat/completions?a=1&a=2&B=x"
    assert run("@(context.Request.OriginalUrl.QueryString)", ctx) == "?subscription-key=k&a=1&a=2&B=x"
    assert run("@(context.Request.Url.Port)", ctx) == 443
    assert run('@(context.Request.Url.Query["a"].Length)', ctx) == 2
    assert run('@(context.Request.Url.Query.GetValueOrDefault("b", "-"))', ctx) == "x"
    assert run("@(context.Request.Url.Path)", ctx) == "/openai/deployments/gpt-4o/chat/completions"
    root = make_ctx(api=make_api(path=""), forward_path="")
    assert run("@(context.Request.Url.Path)", root) == "/"
    assert run("@(context.Api.ServiceUrl.ToString())", ctx) == "https://my-aoai.openai.azure.com/openai"
    assert run("@(context.Api.ServiceUrl == null)", make_ctx(api=make_api(service_url=""))) is True


def test_request_headers() -> None:
    dropped = frozenset({b"host", b"api-key", b"connection"})
    ctx = make_ctx(api=make_api(drop_headers=dropped))
    ctx.request.headers.append((b"x-sluice-trace", b"gateway-token"))  # removed from the forwarded headers
    assert run('@(context.Request.Headers.ContainsKey("X-User"))', ctx) is True
    assert run('@(context.Request.Headers["accept"][1])', ctx) == "text/plain"
    # headers the gateway never forwards are still visible, as in APIM's inbound section
    assert run('@(context.Request.Headers.GetValueOrDefault("api-key"))', ctx) == "caller-key-1"
    assert run('@(context.Request.Headers["Host"][0])', ctx) == "gateway.example.com:8443"
    # the trace header carries the gateway token: never visible
    assert run('@(context.Request.Headers.ContainsKey("x-sluice-trace"))', ctx) is False
    # set-header changes show
    ctx.request_headers.append((b"x-added", b"by-set-header"))
    ctx.request_headers[:] = [h for h in ctx.request_headers if h[0] != b"x-user"]
    assert run('@(context.Request.Headers.GetValueOrDefault("x-added"))', ctx) == "by-set-header"
    assert run('@(context.Request.Headers.GetValueOrDefault("x-user", "deleted"))', ctx) == "deleted"
    assert run("@(context.Request.Headers.Count)", ctx) == 6


def test_response_body() -> None:
    usage = orjson.dumps({"usage": {"total_tokens": 42}})
    head = ResponseHead(200, [], body=usage)
    text = '@(context.Response.Body.As<JObject>(preserveContent: true).SelectToken("usage.total_tokens").Value<int>())'
    assert run(text, make_ctx(response=head)) == 42

    class Streaming:
        pass

    streamed = ResponseHead(200, [], upstream=Streaming())  # type: ignore[arg-type]
    with pytest.raises(Exception, match="streamed"):
        run(text, make_ctx(response=streamed))


def test_deployment_defaults_when_services_has_none() -> None:
    ctx = make_ctx(services=FakeServices(deployment=None))
    assert run('@(context.Deployment.Region == "" && !context.Deployment.Gateway.IsManaged)', ctx) is True


def test_user_is_null() -> None:
    ctx = make_ctx()
    assert run("@(context.User == null)", ctx) is True
    with pytest.raises(Exception, match="Object reference"):
        run("@(context.User.Email)", ctx)
