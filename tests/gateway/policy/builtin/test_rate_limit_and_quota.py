"""rate-limit-by-key and quota-by-key: limits, windows (with an injected clock), headers, variables, conditions,
errors that reach on-error, and load-time validation."""

from __future__ import annotations

import os
import time
import uuid

import orjson
import pytest

from gateway.limits import StoreUnavailable, Window, create_store
from gateway.policy import PolicyError, parse_document
from gateway.policy.builtin._counters import format_timespan
from gateway.policy.builtin.quota_by_key import QuotaByKey
from gateway.policy.builtin.rate_limit_by_key import RateLimitByKey
from gateway.snapshot import load_snapshot

from ...fakes import make_request
from ...helpers import KEYS, TOKEN
from ..helpers import START, Clock, fixture, gateway, header, snapshot, upstream

REDIS_URL = os.environ.get("REDIS_URL", "")


def rate_limit(attrs: str, extra: str = "") -> str:
    return f"<policies><inbound><base/><rate-limit-by-key {attrs}/>{extra}</inbound></policies>"


def quota(attrs: str) -> str:
    return f"<policies><inbound><base/><quota-by-key {attrs}/></inbound></policies>"


#
# rate-limit-by-key
#


async def test_rate_limit_429_with_retry_after_and_apim_body():
    gw = gateway(
        upstream(), api_policy=rate_limit('calls="3" renewal-period="60" counter-key="@(context.Subscription.Id)"')
    )
    gw.clock.now = START + 15
    for _ in range(3):
        assert (await gw.chat()).status == 200
    response = await gw.chat()
    assert response.status == 429
    assert orjson.loads(response.body) == {
        "statusCode": 429,
        "message": "Rate limit is exceeded. Try again in 45 seconds.",
    }
    assert header(response, b"retry-after") == b"45"
    assert len(gw.pool.calls) == 3
    gw.clock.now = START + 60  # the next window
    assert (await gw.chat()).status == 200


async def test_rate_limit_counters_are_per_key_value():
    gw = gateway(
        upstream(), api_policy=rate_limit('calls="1" renewal-period="10" counter-key="@(context.Request.IpAddress)"')
    )
    assert (await gw.chat(client_ip="10.0.0.1")).status == 200
    assert (await gw.chat(client_ip="10.0.0.2")).status == 200
    assert (await gw.chat(client_ip="10.0.0.1")).status == 429


async def test_rate_limit_headers_and_variables():
    gw = gateway(
        upstream(),
        api_policy=rate_limit(
            'calls="2" renewal-period="30" counter-key="k" retry-after-header-name="x-retry" '
            'retry-after-variable-name="retry" remaining-calls-header-name="x-remaining" '
            'remaining-calls-variable-name="remaining" total-calls-header-name="x-total"',
            '<set-header name="x-remaining-var">'
            '<value>@(context.Variables["remaining"].ToString())</value></set-header>',
        ).replace(
            "</policies>",
            "<on-error><set-header name='x-retry-var'>"
            "<value>@(context.Variables[&quot;retry&quot;].ToString())</value></set-header></on-error></policies>",
        ),
    )
    first = await gw.chat()
    assert (header(first, b"x-remaining"), header(first, b"x-total")) == (b"1", b"2")
    assert gw.last_call.header(b"x-remaining-var") == b"1"
    second = await gw.chat()
    assert header(second, b"x-remaining") == b"0"
    third = await gw.chat()
    assert third.status == 429
    assert header(third, b"x-retry") == b"30" and header(third, b"retry-after") is None
    assert header(third, b"x-retry-var") == b"30"
    assert header(third, b"x-remaining") == b"0" and header(third, b"x-total") == b"2"


async def test_increment_condition_counts_only_matching_responses():
    statuses = iter([500, 500, 200, 200, 200])
    gw = gateway(
        lambda call: upstream(status=next(statuses))(call),
        api_policy=rate_limit(
            'calls="2" renewal-period="60" counter-key="c" '
            'increment-condition="@(context.Response.StatusCode &gt;= 200 '
            '&amp;&amp; context.Response.StatusCode &lt; 400)"'
        ),
    )
    assert [(await gw.chat()).status for _ in range(5)] == [500, 500, 200, 200, 429]


async def test_increment_count_and_expression_limits():
    gw = gateway(
        upstream(),
        api_policy=rate_limit(
            'calls="@(int.Parse(context.Request.Headers.GetValueOrDefault(&quot;x-calls&quot;, &quot;5&quot;)))" '
            'renewal-period="@(60)" counter-key="k" increment-count="2"'
        ),
    )
    assert [(await gw.chat()).status for _ in range(3)] == [200, 200, 429]  # 2 + 2 of 5, then 6 > 5
    assert (await gw.chat(headers=[(b"x-calls", b"9")])).status == 200  # 8 of 9


async def test_bad_runtime_limit_is_an_evaluation_failure():
    gw = gateway(upstream(), api_policy=rate_limit('calls="@(-1)" renewal-period="60" counter-key="k"'))
    response = await gw.chat()
    assert response.status == 500  # the detail goes to the log and context.LastError, not to the client (#7)
    assert orjson.loads(response.body) == {"statusCode": 500, "message": "Internal server error."}


async def test_store_outage_lets_requests_through(monkeypatch):
    gw = gateway(upstream(), api_policy=rate_limit('calls="1" renewal-period="60" counter-key="k"'))

    async def down(*args, **kwargs):
        raise StoreUnavailable("down")

    monkeypatch.setattr(gw.store, "reserve", down)
    assert [(await gw.chat()).status for _ in range(3)] == [200, 200, 200]


#
# quota-by-key
#


async def test_quota_403_message_and_fixed_window_from_first_period_start():
    gw = gateway(upstream(), product_policy=None, api_policy=fixture("quota-by-key.xml").replace("base /", "base/"))
    gw.clock.now = START + 100  # first-period-start is START, windows are 300 s
    assert [(await gw.chat()).status for _ in range(3)] == [200, 200, 200]
    response = await gw.chat()
    assert response.status == 403
    assert orjson.loads(response.body) == {
        "statusCode": 403,
        "message": "Out of call volume quota. Quota will be replenished in 00:03:20.",
    }
    assert header(response, b"retry-after") == b"200"
    assert (await gw.chat(client_ip="10.1.1.1")).status == 200  # another key
    gw.clock.now = START + 300
    assert (await gw.chat()).status == 200


async def test_quota_condition_does_not_count_failures():
    statuses = iter([502, 502, 200, 200])
    gw = gateway(
        lambda call: upstream(status=next(statuses))(call),
        api_policy=quota(
            'calls="2" renewal-period="300" counter-key="k" increment-condition="@(context.Response.StatusCode == 200)"'
        ),
    )
    assert [(await gw.chat()).status for _ in range(4)] == [502, 502, 200, 200]
    assert (await gw.chat()).status == 403


async def test_quota_that_never_renews():
    gw = gateway(upstream(), api_policy=quota('calls="1" renewal-period="0" counter-key="k"'))
    assert (await gw.chat()).status == 200
    gw.clock.now += 10 * 365 * 86400
    response = await gw.chat()
    assert response.status == 403
    assert orjson.loads(response.body)["message"] == "Out of call volume quota."
    assert header(response, b"retry-after") is None


async def test_bandwidth_quota_counts_request_and_response_kilobytes():
    gw = gateway(upstream(body=b"x" * 1500), api_policy=quota('bandwidth="3" renewal-period="3600" counter-key="k"'))
    assert (await gw.chat(body=b"y" * 600)).status == 200  # 2100 bytes -> 3 KB
    response = await gw.chat()
    assert response.status == 403
    assert orjson.loads(response.body)["message"].startswith("Out of bandwidth quota. Quota will be replenished in ")


async def test_quota_exceeded_reaches_on_error():
    gw = gateway(
        upstream(),
        api_policy=quota('calls="1" renewal-period="300" counter-key="k"').replace(
            "</policies>", "<on-error><set-status code='402' reason='Pay'/></on-error></policies>"
        ),
    )
    await gw.chat()
    response = await gw.chat()
    assert response.status == 402
    assert orjson.loads(response.body)["message"].startswith("Out of call volume quota.")


@pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)")
async def test_counters_shared_through_redis():
    # Redis expires keys in real time: the clock starts now, 1 s into a 300 s window
    clock = Clock(time.time() // 300 * 300 + 301)
    prefix = f"sluice-test:{uuid.uuid4().hex[:12]}:"
    policy = (
        "<policies><inbound><base/>"
        '<rate-limit-by-key calls="2" renewal-period="60" counter-key="@(context.Request.IpAddress)"/>'
        '<quota-by-key calls="3" renewal-period="300" counter-key="@(context.Request.IpAddress)"/>'
        "</inbound></policies>"
    )
    stores = [create_store("redis", url=REDIS_URL, clock=clock, prefix=prefix) for _ in range(2)]
    try:
        replicas = [gateway(upstream(), clock=clock, store=store, api_policy=policy) for store in stores]
        assert [(await replicas[i % 2].chat()).status for i in range(3)] == [200, 200, 429]
        clock.now += 60
        assert (await replicas[0].chat()).status == 200
        assert (await replicas[1].chat()).status == 403  # the fourth call of the 300 s quota window
    finally:
        for store in stores:
            await store.aclose()


def test_format_timespan():
    assert format_timespan(0) == "00:00:00"
    assert format_timespan(3725) == "01:02:05"
    assert format_timespan(90061) == "1.01:01:01"


#
# Load-time validation
#


def test_literal_settings_are_parsed_once():
    doc = parse_document(rate_limit('calls="10" renewal-period="300" counter-key="@(context.Subscription.Id)"'), "api")
    step = doc.sections[next(iter(doc.sections))][1]
    assert isinstance(step, RateLimitByKey) and (step.calls, step.period, step.count) == (10, 300, 1)
    doc = parse_document(quota('calls="5" bandwidth="100" renewal-period="0" counter-key="k"'), "product")
    step = doc.sections[next(iter(doc.sections))][1]
    assert isinstance(step, QuotaByKey) and (step.calls, step.bandwidth, step.period) == (5, 100, 0)


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (
            rate_limit('calls="10" renewal-period="301" counter-key="k"'),
            "'renewal-period' must be an integer from 1 to 300",
        ),
        (rate_limit('calls="0" renewal-period="60" counter-key="k"'), "'calls' must be an integer of at least 1"),
        (rate_limit('calls="x" renewal-period="60"'), "missing required attribute 'counter-key'"),
        (
            rate_limit('calls="1" renewal-period="60" counter-key="k" increment-condition="maybe"'),
            "true, false or a Boolean",
        ),
        (
            rate_limit('calls="1" renewal-period="60" counter-key="k" increment-condition="@(1)"'),
            "must be a Boolean expression",
        ),
        (
            rate_limit('calls="1" renewal-period="60" counter-key="k" retry-after-header-name="@(&quot;x&quot;)"'),
            "policy expressions are not allowed here",
        ),
        (quota('renewal-period="300" counter-key="k"'), "at least one of 'calls' or 'bandwidth'"),
        (quota('calls="1" renewal-period="299" counter-key="k"'), "0 (never renewed) or at least 300"),
        (quota('calls="@(5)" renewal-period="300" counter-key="k"'), "policy expressions are not allowed here"),
        (quota('calls="1" renewal-period="300" counter-key="k" first-period-start="soon"'), "ISO 8601"),
    ],
)
def test_invalid_limits_are_rejected_with_position(document, fragment):
    with pytest.raises(PolicyError) as info:
        parse_document(document, "api")
    assert fragment in info.value.message
    assert info.value.line == 1 and info.value.column is not None


@pytest.mark.parametrize("policy", ["rate-limit-by-key", "quota-by-key"])
def test_limits_are_inbound_only(policy):
    with pytest.raises(PolicyError, match="not allowed in the outbound section"):
        parse_document(
            f'<policies><outbound><{policy} calls="1" renewal-period="300" counter-key="k"/></outbound></policies>',
            "api",
        )


#
# Counter keys of the subscription alone: remembered per subscription and period
#

MASTER, MASTER_SECONDARY = KEYS["master"]
CHAT_ONLY = KEYS["chat-only"][0]


async def send(gw, key: str, path: str = "/llm/chat/chat/completions", headers=()):
    """A request of the subscription holding ``key`` to the base snapshot's APIs (``chat`` or ``other``)."""
    request_headers = [(b"ocp-apim-subscription-key", key.encode()), *headers]
    return await gw.app(make_request("POST", path, "", request_headers, b"{}"))


def rk_window(counter: str, start: float, calls: int = 2, period: int = 60) -> Window:
    return Window(f"rk:{{{counter}}}:{period}:{int(start)}", calls, start, start + period)


def qk_window(counter: str, start: float, calls: int = 2, period: int = 300) -> Window:
    return Window(f"qk:{{{counter}}}:{period}:{int(start)}:c", calls, start, start + period)


@pytest.mark.parametrize(
    ("statement", "window", "refusal"),
    [
        (rate_limit('calls="2" renewal-period="60" counter-key="@(context.Subscription.Id)"'), rk_window, 429),
        (
            quota('calls="2" renewal-period="300" counter-key="@(context.Subscription?.Id ?? &quot;anonymous&quot;)"'),
            qk_window,
            403,
        ),
    ],
)
async def test_a_key_of_the_subscription_alone_is_evaluated_once_per_subscription_and_period(
    evaluations, statement, window, refusal
):
    gw = gateway(upstream(), global_policy=statement)
    assert [(await send(gw, MASTER)).status for _ in range(2)] == [200, 200]
    assert len(evaluations) == 1
    assert (await send(gw, MASTER_SECONDARY)).status == refusal  # the subscription's other key: the same window
    assert (await send(gw, CHAT_ONLY)).status == 200
    assert len(evaluations) == 2
    # the remembered windows are those the evaluated key gives
    first = window("master", START)
    assert await gw.store.count(first) == 2
    assert await gw.store.count(window("chat-only", START)) == 1
    gw.clock.now = first.end - 0.5
    assert (await send(gw, MASTER)).status == refusal
    gw.clock.now = first.end  # the next period: evaluated again
    assert (await send(gw, MASTER)).status == 200
    assert len(evaluations) == 3
    assert await gw.store.count(window("master", first.end)) == 1


@pytest.mark.parametrize(
    ("key", "requests"),
    [
        # two keys of one subscription: two counters
        (
            "@(context.Subscription.Key)",
            [(MASTER, "/llm/chat/chat/completions", ()), (MASTER_SECONDARY, "/llm/chat/chat/completions", ())],
        ),
        # a header of the request
        (
            "@(context.Subscription.Id + context.Request.Headers.GetValueOrDefault(&quot;x-team&quot;, &quot;&quot;))",
            [
                (MASTER, "/llm/chat/chat/completions", [(b"x-team", b"a")]),
                (MASTER, "/llm/chat/chat/completions", [(b"x-team", b"b")]),
            ],
        ),
        # the API of the request
        (
            "@(context.Subscription.Id + context.Api.Name)",
            [(MASTER, "/llm/chat/chat/completions", ()), (MASTER, "/other/x", ())],
        ),
        # the operation of the request
        (
            "@(context.Subscription.Id + context.Operation.Id)",
            [(MASTER, "/llm/chat/chat/completions", ()), (MASTER, "/llm/chat/x", ())],
        ),
    ],
)
@pytest.mark.parametrize("policy", ["rate-limit-by-key", "quota-by-key"])
async def test_a_key_that_reads_more_than_the_subscription_is_evaluated_per_request(evaluations, key, requests, policy):
    """Two requests of one subscription that differ in what the key reads count apart; a third is refused."""
    period = 60 if policy == "rate-limit-by-key" else 300
    gw = gateway(
        upstream(),
        global_policy=f'<policies><inbound><base/><{policy} calls="1" renewal-period="{period}" counter-key="{key}"/>'
        "</inbound></policies>",
    )
    first, second = requests
    assert (await send(gw, first[0], first[1], first[2])).status == 200
    assert (await send(gw, second[0], second[1], second[2])).status == 200
    assert (await send(gw, first[0], first[1], first[2])).status in (429, 403)
    assert len(evaluations) == 3


async def test_a_snapshot_loaded_again_does_not_serve_a_remembered_key(evaluations):
    """A subscription renamed by a new snapshot counts under its new name (new subscription objects, new
    statements)."""
    policy = rate_limit('calls="5" renewal-period="60" counter-key="@(context.Subscription.Name)"')
    gw = gateway(upstream(), global_policy=policy)
    assert [(await send(gw, MASTER)).status for _ in range(2)] == [200, 200]
    assert len(evaluations) == 1
    data = snapshot(global_policy=policy)
    data["subscriptions"][0]["name"] = "master-renamed"  # the same keys
    gw.app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    assert [(await send(gw, MASTER)).status for _ in range(2)] == [200, 200]
    assert len(evaluations) == 2
    assert await gw.store.count(rk_window("master", START, 5)) == 2
    assert await gw.store.count(rk_window("master-renamed", START, 5)) == 2
