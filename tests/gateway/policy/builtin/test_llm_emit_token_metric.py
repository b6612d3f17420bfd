"""llm-emit-token-metric / azure-openai-emit-token-metric: validation, dimensions, and the counters it moves."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.policy import PolicyError, parse_document
from gateway.policy.builtin.llm_emit_token_metric import BUILT_IN_DIMENSIONS, MAX_CUSTOM_DIMENSIONS, LlmEmitTokenMetric
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot

from ...fakes import FakePool, FakeUpstream, make_request
from ...helpers import KEYS, TOKEN, base_snapshot

KEY = (b"ocp-apim-subscription-key", KEYS["master"][0].encode())
STARTER_KEY = (b"ocp-apim-subscription-key", KEYS["starter-sub"][0].encode())
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
ALL_BUILT_INS = "".join(f'<dimension name="{name}"/>' for name in BUILT_IN_DIMENSIONS)


def statement(inner: str, attrs: str = "", tag: str = "llm-emit-token-metric") -> str:
    return f"<{tag}{attrs}>{inner}</{tag}>"


def parse(policy: str, section: str = "inbound", scope: str = "api") -> LlmEmitTokenMetric:
    document = parse_document(f"<policies><{section}>{policy}</{section}></policies>", scope)
    step = document.sections[next(iter(document.sections))][0]
    assert isinstance(step, LlmEmitTokenMetric)
    return step


def refused(policy: str, section: str = "inbound", scope: str = "api") -> str:
    with pytest.raises(PolicyError) as info:
        parse_document(f"<policies><{section}>{policy}</{section}></policies>", scope)
    return str(info.value)


#
# Validation
#


def test_defaults_and_label_order():
    step = parse(statement('<dimension name="Subscription ID"/><dimension name="API ID"/>'))
    assert step.namespace == "API Management"
    assert step.prefix == "api_management"
    assert step.label_names == ("api_id", "subscription_id")  # sorted: same dimensions in any order, one family


@pytest.mark.parametrize("scope", ["global", "product", "api", "operation"])
def test_every_scope_in_inbound(scope):
    parse(statement('<dimension name="API ID"/>'), scope=scope)


@pytest.mark.parametrize("section", ["backend", "outbound", "on-error"])
def test_inbound_only(section):
    assert "is not allowed in the" in refused(statement('<dimension name="API ID"/>'), section=section)


def test_alias_and_ignored_value_attribute():
    step = parse(
        statement('<dimension name="API ID"/>', ' namespace="Azure" value="1"', "azure-openai-emit-token-metric")
    )
    assert step.name == "azure-openai-emit-token-metric" and step.prefix == "azure"


def test_all_built_ins_and_five_custom():
    custom = "".join(f'<dimension name="c{i}" value="v{i}"/>' for i in range(MAX_CUSTOM_DIMENSIONS))
    step = parse(statement(ALL_BUILT_INS + custom))
    assert len(step.label_names) == len(BUILT_IN_DIMENSIONS) + MAX_CUSTOM_DIMENSIONS


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (statement(""), "at least one <dimension> is required"),
        (statement('<dimension name="Client IP"/>'), "'Client IP' is not a built-in dimension, so it needs a 'value'"),
        (statement('<dimension name="api id"/>'), "is not a built-in dimension"),
        (
            statement("".join(f'<dimension name="c{i}" value="v"/>' for i in range(MAX_CUSTOM_DIMENSIONS + 1))),
            "at most 5 custom dimensions",
        ),
        (statement('<dimension name="API ID"/><dimension name="API ID"/>'), "'API ID' appears more than once"),
        (statement('<dimension name="API ID"/><dimension name="api-id" value="x"/>'), "both become the label 'api_id'"),
        (statement('<dimension name="API ID"/>', ' namespace="@(&quot;x&quot;)"'), "expressions are not allowed"),
        (statement('<dimension name="@(context.Api.Name)" value="x"/>'), "expressions are not allowed"),
        (statement('<dimension name="---" value="x"/>'), "no letter or digit"),
        (statement('<dimension name="API ID"/>', ' namespace="..."'), "no letter or digit"),
        (statement('<dimension value="x"/>'), "missing required attribute 'name'"),
        (statement('<dimension name="API ID" colour="red"/>'), "unknown attribute 'colour'"),
        (statement('<dimension name="API ID">text</dimension>'), "must not contain text"),
        (statement('<dimension name="API ID"><x/></dimension>'), "takes no child elements"),
        (statement('<metric name="API ID"/>'), "<metric> is not allowed inside"),
        (statement('<dimension name="API ID"/>', ' colour="red"'), "unknown attribute 'colour'"),
        (statement('<dimension name="x" value="@(context.Nope)"/>'), "invalid policy expression"),
    ],
)
def test_validation_errors(policy, message):
    assert message in refused(policy)


def test_errors_carry_positions():
    text = '<policies>\n<inbound>\n<llm-emit-token-metric>\n  <dimension name="Client IP"/>\n'
    text += "</llm-emit-token-metric>\n</inbound>\n</policies>"
    with pytest.raises(PolicyError) as info:
        parse_document(text, "api")
    assert info.value.line == 4


#
# Counting
#


def chat_response(usage=USAGE, model="gpt-4o-mini") -> FakeUpstream:
    return FakeUpstream(body=orjson.dumps({"id": "x", "model": model, "choices": [], "usage": usage}))


def sse_response(usage=USAGE) -> FakeUpstream:
    events = [
        b'data: {"model":"m","choices":[{"delta":{"content":"hi"}}]}\n\n',
        b'data: {"model":"m","choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n",
        b"data: [DONE]\n\n",
    ]
    return FakeUpstream(chunks=events, headers=[(b"content-type", b"text/event-stream")])


def gateway(api_policy=None, global_policy=None, respond=chat_response, **config):
    data = base_snapshot()
    data["global_policy"] = global_policy
    data["apis"][0]["policy"] = api_policy
    pool = FakePool(respond=lambda call: respond())
    metrics = Metrics()
    cfg = GatewaySettings(gateway_token=TOKEN, gateway_id=config.pop("gateway_id", "gw-1"), **config)
    app = create_app(cfg, pool=pool, metrics=metrics)
    app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    return app, metrics, pool


async def send(app, *headers, body=b'{"model": "m", "messages": [], "user": "alice"}'):
    response = await app(make_request("POST", "/llm/chat/chat/completions", "", [*headers], body))
    if hasattr(response, "body_iter"):
        chunks = [chunk async for chunk in response.body_iter]
        return response, b"".join(chunks)
    return response, response.body


def samples(metrics: Metrics, family: str) -> list:
    for parsed in text_string_to_metric_families(metrics.exposition().decode()):
        if parsed.name == family:
            return parsed.samples
    return []


def policies(inbound: str) -> str:
    return f"<policies><inbound><base/>{inbound}</inbound></policies>"


async def test_built_in_dimensions_of_a_json_response():
    app, metrics, _ = gateway(policies(statement(ALL_BUILT_INS)), region="westeurope")
    response, _ = await send(app, STARTER_KEY)
    assert response.status == 200
    labels = {
        "api_id": "chat",
        "operation_id": "chat-completions",
        "product_id": "starter",
        "user_id": "",
        "subscription_id": "starter-sub",
        "location": "westeurope",
        "gateway_id": "gw-1",
        "backend_id": "",  # the API's service URL, not a backend entity
    }
    for kind, expected in (("prompt", 11), ("completion", 7), ("total", 18)):
        (sample,) = samples(metrics, f"api_management_{kind}_tokens")
        assert sample.labels == labels and sample.value == expected


async def test_backend_id_is_resolved_after_set_backend_service():
    policy = policies('<set-backend-service backend-id="llm-backend"/>' + statement('<dimension name="Backend ID"/>'))
    app, metrics, _ = gateway(policy)
    await send(app, KEY)
    (sample,) = samples(metrics, "api_management_total_tokens")
    assert sample.labels == {"backend_id": "llm-backend"}


async def test_custom_dimensions_are_evaluated_in_inbound():
    body_user = "@(context.Request.Body.As&lt;JObject&gt;(preserveContent: true)[&quot;user&quot;].ToString())"
    custom = (
        '<dimension name="Client IP" value="@(context.Request.IpAddress)"/>'
        f'<dimension name="User" value="{body_user}"/>'
        '<dimension name="Team" value="research"/>'
    )
    app, metrics, _ = gateway(policies(statement('<dimension name="API ID"/>' + custom, ' namespace="My LLM"')))
    await send(app, KEY)
    (sample,) = samples(metrics, "my_llm_prompt_tokens")
    assert sample.labels == {"api_id": "chat", "client_ip": "10.0.0.1", "team": "research", "user": "alice"}
    assert sample.value == 11


async def test_a_stream_counts_at_its_end():
    app, metrics, _ = gateway(policies(statement('<dimension name="Subscription ID"/>')), respond=sse_response)
    _, body = await send(app, KEY, body=b'{"model": "m", "messages": [], "stream": true}')
    assert b"[DONE]" in body
    (sample,) = samples(metrics, "api_management_completion_tokens")
    assert sample.labels == {"subscription_id": "master"} and sample.value == 7


async def test_a_stream_without_usage_counts_the_estimate():
    def no_usage():
        return FakeUpstream(
            chunks=[b'data: {"choices":[{"delta":{"content":"hello world"}}]}\n\n', b"data: [DONE]\n\n"],
            headers=[(b"content-type", b"text/event-stream")],
        )

    app, metrics, _ = gateway(policies(statement('<dimension name="API ID"/>')), respond=no_usage)
    await send(app, KEY, body=b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}')
    completion = samples(metrics, "api_management_completion_tokens")
    assert completion and completion[0].value > 0


async def test_each_statement_counts_and_same_dimensions_share_series():
    api = policies(statement('<dimension name="API ID"/><dimension name="Operation ID"/>'))
    glob = policies(statement('<dimension name="Operation ID"/><dimension name="API ID"/>'))
    app, metrics, _ = gateway(api, global_policy=glob)
    await send(app, KEY)
    (sample,) = samples(metrics, "api_management_total_tokens")  # one series, counted by both statements
    assert sample.value == 36


async def test_no_usage_no_count():
    app, metrics, _ = gateway(
        policies(statement('<dimension name="API ID"/>')), respond=lambda: FakeUpstream(status=500, body=b"{}")
    )
    response, _ = await send(app, KEY)
    assert response.status == 500
    assert samples(metrics, "api_management_total_tokens") == []


async def test_without_metrics_the_policy_does_nothing():
    data = base_snapshot()
    data["apis"][0]["policy"] = policies(statement('<dimension name="API ID"/>'))
    app = create_app(GatewaySettings(gateway_token=TOKEN), pool=FakePool(respond=lambda call: chat_response()))
    app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    response, _ = await send(app, KEY)
    assert response.status == 200


#
# Custom dimensions of the subscription alone: the emission remembered per subscription
#


def series(metrics: Metrics, family: str) -> dict[tuple, float]:
    return {tuple(sorted(sample.labels.items())): sample.value for sample in samples(metrics, family)}


async def test_a_dimension_of_the_subscription_alone_is_evaluated_once_per_subscription(evaluations):
    """And its value is the one evaluated per request: a second statement whose dimension reads the key as well (so
    is evaluated every time) gives the same labels."""
    remembered = statement(
        '<dimension name="API ID"/><dimension name="Team" value="research"/>'
        '<dimension name="Sub" value="@(context.Subscription?.Id ?? &quot;anonymous&quot;)"/>',
        ' namespace="remembered"',
    )
    evaluated = statement(
        '<dimension name="API ID"/><dimension name="Team" value="research"/>'
        '<dimension name="Sub" value="@(context.Subscription.Key != null ? context.Subscription.Id : &quot;&quot;)"/>',
        ' namespace="evaluated"',
    )
    app, metrics, _ = gateway(policies(remembered + evaluated))
    for key in (KEY, KEY, (KEY[0], KEYS["master"][1].encode()), STARTER_KEY, KEY):
        response, _ = await send(app, key)
        assert response.status == 200
    assert evaluations.count('@(context.Subscription?.Id ?? "anonymous")') == 2  # master, starter-sub
    assert len(evaluations) == 2 + 5
    expected = {
        (("api_id", "chat"), ("sub", "master"), ("team", "research")): 4 * 18,
        (("api_id", "chat"), ("sub", "starter-sub"), ("team", "research")): 18,
    }
    assert series(metrics, "remembered_total_tokens") == series(metrics, "evaluated_total_tokens") == expected


@pytest.mark.parametrize(
    ("value", "requests", "labels"),
    [
        (
            "@(context.Subscription.Key)",
            [
                (KEY, "/llm/chat/chat/completions", ()),
                ((KEY[0], KEYS["master"][1].encode()), "/llm/chat/chat/completions", ()),
            ],
            {KEYS["master"][0], KEYS["master"][1]},
        ),
        (
            "@(context.Request.Headers.GetValueOrDefault(&quot;x-team&quot;, &quot;none&quot;))",
            [
                (KEY, "/llm/chat/chat/completions", ((b"x-team", b"a"),)),
                (KEY, "/llm/chat/chat/completions", ((b"x-team", b"b"),)),
            ],
            {"a", "b"},
        ),
        (
            "@(context.Request.Method + context.Request.Url.Path)",
            [(KEY, "/llm/chat/chat/completions", ()), (KEY, "/llm/chat/x", ())],
            {"POST/llm/chat/chat/completions", "POST/llm/chat/x"},
        ),
        (
            "@(context.Operation.Id)",
            [(KEY, "/llm/chat/chat/completions", ()), (KEY, "/llm/chat/x", ())],
            {"chat-completions", "wild-post"},
        ),
        (
            "@(context.Api.Name)",
            [(KEY, "/llm/chat/chat/completions", ()), (KEY, "/other/x", ())],
            {"chat", "other"},
        ),
    ],
)
async def test_a_dimension_that_reads_more_than_the_subscription_is_evaluated_per_request(
    evaluations, value, requests, labels
):
    """Two requests of one subscription that differ in what the dimension reads give two series (a global policy,
    so that the API and the operation can differ)."""
    app, metrics, _ = gateway(global_policy=policies(statement(f'<dimension name="V" value="{value}"/>')))
    for key, path, headers in requests:
        response = await app(make_request("POST", path, "", [key, *headers], b'{"model": "m", "messages": []}'))
        assert response.status == 200
    assert len(evaluations) == len(requests)
    assert {sample.labels["v"] for sample in samples(metrics, "api_management_total_tokens")} == labels


async def test_a_snapshot_loaded_again_does_not_serve_a_remembered_dimension(evaluations):
    """A subscription renamed by a new snapshot is counted under its new name (new subscription objects, new
    statements)."""
    policy = policies(statement('<dimension name="Sub" value="@(context.Subscription.Name)"/>'))
    app, metrics, _ = gateway(policy)
    await send(app, KEY)
    await send(app, KEY)
    data = base_snapshot()
    data["apis"][0]["policy"] = policy
    data["subscriptions"][0]["name"] = "master-renamed"  # the same keys
    app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    await send(app, KEY)
    assert len(evaluations) == 2
    assert series(metrics, "api_management_total_tokens") == {
        (("sub", "master"),): 36,
        (("sub", "master-renamed"),): 18,
    }


async def test_another_metrics_registry_gets_its_own_emission():
    """The remembered emission belongs to the Metrics it was built for."""
    policy = policies(statement('<dimension name="Sub" value="@(context.Subscription.Id)"/>'))
    app, first, _ = gateway(policy)
    await send(app, KEY)
    second = Metrics()
    app.forwarder.metrics = second  # what ctx.services.metrics is
    await send(app, KEY)
    assert series(first, "api_management_total_tokens") == {(("sub", "master"),): 18}
    assert series(second, "api_management_total_tokens") == {(("sub", "master"),): 18}
