"""llm-token-limit without sockets: validation, reservations, 429/403, headers, variables, settlement, streams."""

from __future__ import annotations

import orjson
import pytest

from gateway.app import TRACE_HEADER, create_app
from gateway.limits import StoreUnavailable, create_store, minute_window, quota_window
from gateway.limits.memory import MemoryTokenStore
from gateway.pipeline import Pipeline
from gateway.policy import Policy, PolicyError, Scope, Section, parse_document
from gateway.policy.builtin.forward_request import ForwardRequest
from gateway.policy.builtin.llm_token_limit import format_wait
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot
from gateway.tokens import TokenUsage

from ...fakes import FakePool, FakeUpstream, header, make_request
from ...helpers import KEYS, TOKEN, base_snapshot, trace_token
from ...limits.helpers import FakeClock

KEY = (b"ocp-apim-subscription-key", KEYS["master"][0].encode())
OTHER_KEY = (b"ocp-apim-subscription-key", KEYS["chat-only"][0].encode())
USAGE = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 40}
PROMPT_ESTIMATE = 9  # 3 + "user" + "hello world" + 3 (cl100k)


def policy(attrs: str, on_error: str = "") -> str:
    return (
        f"<policies><inbound><base/><llm-token-limit {attrs}/></inbound>"
        f"<on-error><base/>{on_error}</on-error></policies>"
    )


def respond_json(usage=USAGE, status=200):
    def respond(call):
        return FakeUpstream(status=status, body=orjson.dumps({"model": "gpt-4", "usage": usage}))

    return respond


class Gateway:
    def __init__(
        self, op_policy: str | None, *, respond=None, api_type="openai", store=None, clock=None, api_policy=None
    ):
        data = base_snapshot()
        data["apis"][0]["api_type"] = api_type
        data["apis"][0]["operations"][0]["policy"] = op_policy  # POST /chat/completions
        data["apis"][0]["policy"] = api_policy
        self.clock = clock or FakeClock()
        self.store = store or create_store("memory", clock=self.clock)
        self.pool = FakePool(respond=respond or respond_json())
        self.app = create_app(GatewaySettings(gateway_token=TOKEN), pool=self.pool, token_store=self.store)
        self.app.snapshot = load_snapshot(data, gateway_token=TOKEN)

    async def send(self, body=CHAT, key=KEY, headers=()):
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return await self.app(make_request("POST", "/llm/chat/chat/completions", "", [key, *headers], raw))

    async def minute_count(self, counter: str, limit: int = 1) -> int:
        return await self.store.count(minute_window(counter, self.clock(), limit))


#
# Validation
#


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ('tokens-per-minute="5" estimate-prompt-tokens="true"', "missing required attribute 'counter-key'"),
        ('counter-key="k" tokens-per-minute="5"', "missing required attribute 'estimate-prompt-tokens'"),
        ('counter-key="k" estimate-prompt-tokens="true"', "give 'tokens-per-minute'"),
        ('counter-key="k" token-quota="5" estimate-prompt-tokens="true"', "must be given together"),
        ('counter-key="k" token-quota-period="Daily" tokens-per-minute="5" estimate-prompt-tokens="true"', "together"),
        ('counter-key="k" tokens-per-minute="0" estimate-prompt-tokens="true"', "integer of at least 1"),
        ('counter-key="k" tokens-per-minute="many" estimate-prompt-tokens="true"', "integer of at least 1"),
        ('counter-key="k" token-quota="5" token-quota-period="Daily" estimate-prompt-tokens="maybe"', "must be one of"),
        ('counter-key="k" token-quota="5" token-quota-period="Fortnightly" estimate-prompt-tokens="true"', "one of"),
        ('counter-key="k" token-quota="@(5)" token-quota-period="Daily" estimate-prompt-tokens="true"', "not allowed"),
        ('counter-key="k" tokens-per-minute="5" estimate-prompt-tokens="true" retry-after-header-name="a b"', "inval"),
        ('counter-key="k" tokens-per-minute="5" estimate-prompt-tokens="true" bogus="1"', "unknown attribute 'bogus'"),
        ('counter-key="k" tokens-per-minute="1" estimate-prompt-tokens="true" tokens-consumed-variable-name=""', "emp"),
    ],
)
def test_invalid_statements(attrs, message):
    with pytest.raises(PolicyError, match=message):
        parse_document(policy(attrs), Scope.API)


def test_inbound_only_and_alias():
    for name in ("llm-token-limit", "azure-openai-token-limit"):
        statement = f'<{name} counter-key="k" tokens-per-minute="5" estimate-prompt-tokens="false"/>'
        parse_document(f"<policies><inbound>{statement}</inbound></policies>", Scope.GLOBAL)
        with pytest.raises(PolicyError):
            parse_document(f"<policies><outbound>{statement}</outbound></policies>", Scope.API)


def test_format_wait():
    assert format_wait(41) == "41 seconds"
    assert format_wait(1) == "1 second"
    assert format_wait(21 * 60 + 33) == "21 minutes and 33 seconds"
    assert format_wait(3 * 3600 + 120 + 1) == "3 hours, 2 minutes and 1 second"
    assert format_wait(86400) == "1 day"


#
# Admission
#


async def test_429_after_the_per_minute_budget_is_used():
    gateway = Gateway(
        policy(
            'counter-key="k1" tokens-per-minute="200" estimate-prompt-tokens="true" '
            'retry-after-variable-name="wait" remaining-tokens-header-name="x-remaining" '
            'remaining-tokens-variable-name="left" tokens-consumed-header-name="x-consumed"',
            on_error='<set-header name="x-reason" exists-action="override"><value>@(context.LastError.Reason)'
            '</value></set-header><set-header name="x-wait" exists-action="override">'
            '<value>@(context.Variables.GetValueOrDefault("wait", 0).ToString())</value></set-header>',
        )
    )
    statuses = []
    for _ in range(5):
        response = await gateway.send()
        statuses.append(response.status)
        if response.status == 200:
            assert header(response, b"x-consumed") == b"50"
    # each reserves 9 + 40 = 49 and settles to 50: 4 fit (200), the 5th would need 49 more
    assert statuses == [200, 200, 200, 200, 429]
    gateway.clock.advance(18.4)
    response = await gateway.send()
    assert response.status == 429
    assert orjson.loads(response.body) == {
        "statusCode": 429,
        "message": "Token limit is exceeded. Try again in 41 seconds.",
    }
    assert header(response, b"retry-after") == b"41"
    assert header(response, b"x-remaining") == b"0"
    assert header(response, b"x-reason") == b"TokenLimitExceeded"
    assert header(response, b"x-wait") == b"41"
    assert header(response, b"content-type").startswith(b"application/json")
    assert len(gateway.pool.calls) == 4
    gateway.clock.advance(41)  # the next minute
    assert (await gateway.send()).status == 200


async def test_403_when_the_quota_is_used_and_custom_retry_header():
    gateway = Gateway(
        policy(
            'counter-key="q" token-quota="100" token-quota-period="Hourly" estimate-prompt-tokens="false" '
            'retry-after-header-name="x-retry" remaining-quota-tokens-header-name="x-quota-left" '
            'remaining-quota-tokens-variable-name="quota_left"'
        )
    )
    first = await gateway.send()
    assert first.status == 200
    assert header(first, b"x-quota-left") == b"50"  # 100 - 50 actual
    assert (await gateway.send()).status == 200
    refused = await gateway.send()
    assert refused.status == 403
    # the fake clock starts 1 s into a minute; the hour ends at some minute boundary
    retry = int(header(refused, b"x-retry"))
    assert header(refused, b"retry-after") is None
    assert orjson.loads(refused.body) == {
        "statusCode": 403,
        "message": f"Token quota is exceeded. Try again in {format_wait(retry)}.",
    }
    assert header(refused, b"x-quota-left") == b"0"


async def test_quota_refusal_wins_over_the_minute():
    gateway = Gateway(
        policy(
            'counter-key="both" tokens-per-minute="60" token-quota="60" token-quota-period="Daily" '
            'estimate-prompt-tokens="true"'
        )
    )
    assert (await gateway.send()).status == 200  # 50 used in both windows
    assert (await gateway.send()).status == 403


async def test_reservation_is_prompt_estimate_plus_completion_cap():
    gateway = Gateway(policy('counter-key="r" tokens-per-minute="10000" estimate-prompt-tokens="true"'))
    gateway.pool.respond = lambda call: FakeUpstream(body=b"{}")  # no usage: settled to the estimate (prompt only)
    trace_key = (TRACE_HEADER, trace_token("chat"))
    cases = [
        (CHAT, PROMPT_ESTIMATE + 40),
        ({**CHAT, "n": 3}, PROMPT_ESTIMATE + 120),
        ({**CHAT, "max_tokens": None}, PROMPT_ESTIMATE + 1024),  # no cap: the default reservation
        ({**CHAT, "max_tokens": 50_000}, 10_000),  # at most the limit (so it fits only an unused minute)
    ]
    for body, reserved in cases:
        if reserved == 10_000:
            gateway.clock.advance(60)
        response = await gateway.send(body, headers=[trace_key])
        entry = next(e for e in orjson.loads(header(response, TRACE_HEADER)) if e["policy"] == "llm-token-limit")
        assert entry["reserved"] == reserved, body
        assert entry["prompt-estimate"] == PROMPT_ESTIMATE


async def test_a_reservation_is_at_most_the_smallest_limit_of_its_windows():
    gateway = Gateway(
        policy(
            'counter-key="c" tokens-per-minute="10000" token-quota="5000" token-quota-period="Daily" '
            'estimate-prompt-tokens="true"'
        )
    )
    gateway.pool.respond = lambda call: FakeUpstream(body=b"{}")  # settled to the prompt estimate
    trace_key = (TRACE_HEADER, trace_token("chat"))
    # the windows built, then found again: both times the quota's 5000 is the most a request reserves
    for max_tokens, reserved in ((50_000, 5000), (4000, PROMPT_ESTIMATE + 4000)):
        response = await gateway.send({**CHAT, "max_tokens": max_tokens}, headers=[trace_key])
        entry = next(e for e in orjson.loads(header(response, TRACE_HEADER)) if e["policy"] == "llm-token-limit")
        assert response.status == 200 and entry["reserved"] == reserved
    # the quota has two prompts in it: 5000 more do not fit
    assert (await gateway.send({**CHAT, "max_tokens": 50_000})).status == 403
    assert (await gateway.send({**CHAT, "max_tokens": 10}, headers=[trace_key])).status == 200


async def test_without_estimation_only_streams_reserve_the_prompt():
    gateway = Gateway(
        policy(
            'counter-key="e" tokens-per-minute="10000" estimate-prompt-tokens="false" '
            'sluice-default-completion-reservation="7" tokens-consumed-variable-name="used"'
        )
    )
    gateway.pool.respond = lambda call: FakeUpstream(body=b"{}")
    trace_key = (TRACE_HEADER, trace_token("chat"))
    response = await gateway.send({**CHAT, "max_tokens": None}, headers=[trace_key])
    entry = next(e for e in orjson.loads(header(response, TRACE_HEADER)) if e["policy"] == "llm-token-limit")
    assert entry["reserved"] == 7 and entry["prompt-estimate"] == 0
    response = await gateway.send({**CHAT, "stream": True}, headers=[trace_key])
    entry = next(e for e in orjson.loads(header(response, TRACE_HEADER)) if e["policy"] == "llm-token-limit")
    assert entry["reserved"] == PROMPT_ESTIMATE + 40  # APIM: streamed prompts are always estimated


async def test_settles_to_the_reported_usage():
    gateway = Gateway(policy('counter-key="s" tokens-per-minute="1000" estimate-prompt-tokens="true"'))
    await gateway.send()
    await gateway.send()
    assert await gateway.minute_count("s") == 100


@pytest.mark.parametrize("status", [400, 500])
async def test_a_failed_backend_call_is_settled_to_zero(status):
    gateway = Gateway(policy('counter-key="f" tokens-per-minute="1000" estimate-prompt-tokens="true"'))
    gateway.pool.respond = lambda call: FakeUpstream(status=status, body=b'{"error": {"message": "no"}}')
    assert (await gateway.send()).status == status
    assert await gateway.minute_count("f") == 0


async def test_counter_keys_from_expressions_are_separate():
    gateway = Gateway(
        policy('counter-key="@(context.Subscription.Name)" tokens-per-minute="60" estimate-prompt-tokens="true"')
    )
    assert (await gateway.send(key=KEY)).status == 200
    assert (await gateway.send(key=KEY)).status == 429
    assert (await gateway.send(key=OTHER_KEY)).status == 200
    assert await gateway.minute_count("master") == 50
    assert await gateway.minute_count("chat-only") == 50


async def test_the_alias_behaves_the_same():
    gateway = Gateway(
        "<policies><inbound><azure-openai-token-limit counter-key='a' tokens-per-minute='60' "
        "estimate-prompt-tokens='true'/></inbound></policies>"
    )
    assert [(await gateway.send()).status for _ in range(2)] == [200, 429]


async def test_a_request_without_body_reserves_nothing_but_is_blocked_when_over():
    gateway = Gateway(policy('counter-key="g" tokens-per-minute="60" estimate-prompt-tokens="true"'))
    gateway.pool.respond = respond_json({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
    assert (await gateway.send(b"")).status == 200
    assert await gateway.minute_count("g") == 0
    gateway.pool.respond = respond_json({"prompt_tokens": 60, "completion_tokens": 10, "total_tokens": 70})
    assert (await gateway.send()).status == 200  # overshoot detected on the response: 70 > 60
    gateway.pool.respond = respond_json()
    assert (await gateway.send(b"")).status == 429


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b'{"messages": [], "max_tokens": NaN}', "unexpected character"),
        (b'\xef\xbb\xbf{"model": "gpt-4", "messages": []}', "byte order mark"),
        (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
        (b"not json", "(line 1, column 1)"),
        (b"[1, 2]", "a JSON object is expected, got an array"),
        (b"17", "a JSON object is expected, got a number"),
    ],
)
async def test_a_body_orjson_refuses_is_a_400_not_a_free_request(raw, detail):
    """Issue #7 item 2: such bodies used to pass as "no body": nothing reserved, and the request settled to 0."""
    gateway = Gateway(policy('counter-key="g" tokens-per-minute="60" estimate-prompt-tokens="true"'))
    response = await gateway.send(raw)
    assert response.status == 400
    body = orjson.loads(response.body)
    assert body["statusCode"] == 400 and body["message"].startswith("Request body is not valid JSON: ")
    assert detail in body["message"]
    assert gateway.pool.calls == [] and await gateway.minute_count("g") == 0


async def test_the_store_failing_lets_requests_through():
    class DownStore:
        def now(self):
            return 0.0

        def reserve_now(self, windows, amount, now):
            return None

        async def reserve(self, windows, amount, now):
            raise StoreUnavailable("connection refused")

        async def aclose(self):
            pass

    gateway = Gateway(policy('counter-key="d" tokens-per-minute="1" estimate-prompt-tokens="true"'), store=DownStore())
    assert (await gateway.send()).status == 200


async def test_an_admission_the_store_decides_at_once_is_not_awaited():
    """``reserve_now`` first (the memory store; the Redis store from a lease): ``reserve`` only when it returns None."""

    class AtOnce(MemoryTokenStore):
        async def reserve(self, windows, amount, now):
            raise AssertionError("reserve awaited although reserve_now decided")

    clock = FakeClock()
    gateway = Gateway(
        policy('counter-key="at-once" tokens-per-minute="100" estimate-prompt-tokens="true"'),
        store=AtOnce(clock=clock),
        clock=clock,
    )
    assert (await gateway.send()).status == 200
    assert await gateway.minute_count("at-once") == 50  # reserved 9 + 40, settled to the usage
    refused = await gateway.send({**CHAT, "max_tokens": 60})  # 50 + 9 + 60 > 100
    assert refused.status == 429 and await gateway.minute_count("at-once") == 50


async def test_streams_are_counted_and_the_injected_usage_event_removed():
    events = [
        b'data: {"model":"gpt-4","choices":[{"index":0,"delta":{"content":"hello"}}]}\n\n',
        b'data: {"model":"gpt-4","choices":[{"index":0,"delta":{"content":" world"}}]}\n\n',
        b'data: {"model":"gpt-4","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n',
        b"data: [DONE]\n\n",
    ]
    sent_bodies = []

    def respond(call):
        sent_bodies.append(orjson.loads(call.body))
        return FakeUpstream(chunks=events, headers=[(b"content-type", b"text/event-stream")])

    gateway = Gateway(
        policy(
            'counter-key="st" tokens-per-minute="1000" estimate-prompt-tokens="false" '
            'tokens-consumed-header-name="x-consumed"'
        ),
        respond=respond,
    )
    response = await gateway.send({**CHAT, "stream": True})
    assert header(response, b"x-consumed") == str(PROMPT_ESTIMATE).encode()  # the prompt so far
    body = b"".join([chunk async for chunk in response.body_iter])
    assert sent_bodies[0]["stream_options"] == {"include_usage": True}
    assert body == events[0] + events[1] + events[3]
    assert await gateway.minute_count("st") == 11
    # the client asked for usage: it keeps the event
    response = await gateway.send({**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    body = b"".join([chunk async for chunk in response.body_iter])
    assert body == b"".join(events)
    assert await gateway.minute_count("st") == 22


async def test_an_aborted_stream_is_settled_with_what_passed():
    events = [b'data: {"choices":[{"index":0,"delta":{"content":"hello"}}]}\n\n'] * 5
    gateway = Gateway(
        policy('counter-key="ab" tokens-per-minute="1000" estimate-prompt-tokens="true"'),
        respond=lambda call: FakeUpstream(chunks=events, headers=[(b"content-type", b"text/event-stream")]),
    )
    response = await gateway.send({**CHAT, "stream": True})
    iterator = response.body_iter
    await iterator.__anext__()
    await iterator.__anext__()
    await iterator.aclose()  # the client went away after two events
    assert await gateway.minute_count("ab") == PROMPT_ESTIMATE + 2


class Capture(Policy):
    """An unregistered inbound step that records ``ctx.usage`` when the request is over."""

    name = "capture"
    sections = frozenset({Section.INBOUND})

    def __init__(self) -> None:
        super().__init__()
        self.usages: list = []

    async def apply(self, ctx):
        ctx.on_finish.append(lambda ctx, complete: self.usages.append((ctx.usage, complete)))


@pytest.mark.parametrize("api_type", ["openai", "passthrough"])
async def test_usage_is_accounted_without_the_policy(api_type):
    gateway = Gateway(None, api_type=api_type)
    capture = Capture()
    operation = gateway.app.snapshot.apis["chat"].operations[0]
    gateway.app.snapshot.pipelines[operation][None] = Pipeline((capture,), (ForwardRequest(None),), (), ())
    assert (await gateway.send(headers=[(b"accept-encoding", b"gzip")])).status == 200
    if api_type == "openai":
        assert capture.usages == [(TokenUsage(20, 30, 50, "gpt-4"), True)]
        assert gateway.pool.calls[0].header(b"accept-encoding") is None
    else:  # passthrough APIs are accounted only under llm-token-limit
        assert capture.usages == [(None, True)]
        assert gateway.pool.calls[0].header(b"accept-encoding") == b"gzip"


async def test_quota_window_key_matches_the_policy():
    gateway = Gateway(
        policy('counter-key="wq" token-quota="1000" token-quota-period="Monthly" estimate-prompt-tokens="true"')
    )
    await gateway.send()
    assert await gateway.store.count(quota_window("wq", "Monthly", gateway.clock(), 1000)) == 50


async def test_a_multipart_body_elsewhere_than_a_model_operation_is_let_through():
    """Issue #7: the JSON rule covers model operations, and bodies that claim (or do not say) they are JSON;
    an audio upload under the same policy is forwarded and counted from the response's usage."""
    gateway = Gateway(None, api_policy=policy('counter-key="m" tokens-per-minute="1000" estimate-prompt-tokens="true"'))
    multipart = (b"content-type", b"multipart/form-data; boundary=x")
    request = make_request("POST", "/llm/chat/audio/transcriptions", "", [KEY, multipart], b"--x\r\n\xff\r\n--x--")
    assert (await gateway.app(request)).status == 200
    assert await gateway.minute_count("m") == USAGE["total_tokens"]
    refused = make_request("POST", "/llm/chat/chat/completions", "", [KEY, multipart], b"--x\r\n\xff\r\n--x--")
    assert (await gateway.app(refused)).status == 400
    json_claimed = make_request("POST", "/llm/chat/audio/x", "", [KEY, (b"content-type", b"application/json")], b"NaN")
    assert (await gateway.app(json_claimed)).status == 400


async def test_a_key_of_the_subscription_alone_is_evaluated_once_per_subscription_and_minute(evaluations):
    """``@(context.Subscription.Name)`` depends on the subscription alone: its windows are kept per subscription for
    the minute, and the counts are those of evaluating it per request."""
    gateway = Gateway(
        policy('counter-key="@(context.Subscription.Name)" tokens-per-minute="200" estimate-prompt-tokens="true"')
    )
    assert [(await gateway.send(key=KEY)).status for _ in range(3)] == [200, 200, 200]
    assert len(evaluations) == 1
    assert (await gateway.send(key=OTHER_KEY)).status == 200
    assert (await gateway.send(key=(KEY[0], KEYS["master"][1].encode()))).status == 200  # the other key, same sub
    assert len(evaluations) == 2
    assert await gateway.minute_count("master") == 200
    assert await gateway.minute_count("chat-only") == 50
    assert (await gateway.send(key=KEY)).status == 429  # the same windows: the limit still holds
    gateway.clock.advance(60)  # a new minute: new windows, evaluated again
    assert (await gateway.send(key=KEY)).status == 200
    assert len(evaluations) == 3
    assert await gateway.minute_count("master") == 50


async def test_a_key_that_reads_more_than_the_subscription_is_evaluated_per_request(evaluations):
    gateway = Gateway(
        policy(
            'counter-key="@(context.Subscription.Name + context.Request.Method)" tokens-per-minute="1000" '
            'estimate-prompt-tokens="true"'
        )
    )
    assert [(await gateway.send(key=KEY)).status for _ in range(3)] == [200, 200, 200]
    assert len(evaluations) == 3
    assert await gateway.minute_count("masterPOST") == 150


async def test_a_subscription_loaded_again_is_evaluated_again(evaluations):
    """The windows are kept per subscription object: a snapshot loaded again brings new ones, and its policy."""
    op_policy = policy(
        'counter-key="@(context.Subscription?.Id ?? &quot;anonymous&quot;)" tokens-per-minute="1000" '
        'estimate-prompt-tokens="true"'
    )
    gateway = Gateway(op_policy)
    assert [(await gateway.send(key=KEY)).status for _ in range(2)] == [200, 200]
    assert len(evaluations) == 1
    data = base_snapshot()
    data["apis"][0]["api_type"] = "openai"
    data["apis"][0]["operations"][0]["policy"] = op_policy
    gateway.app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    assert (await gateway.send(key=KEY)).status == 200
    assert len(evaluations) == 2
    assert await gateway.minute_count("master") == 150
