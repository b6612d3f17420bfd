"""``llm-semantic-cache-lookup`` / ``-store``: what is refused when a document loads, and the pipeline's handling of a
hit, the store's rules and the trace in process (a fake pool answers the model and the embeddings backend). The
behaviour through a real gateway process is in tests/gateway/test_semantic_cache.py, the stores in
tests/gateway/semcache/."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import orjson
import pytest

from gateway.app import TRACE_HEADER
from gateway.policy import PolicyError, parse_document
from gateway.policy.builtin import llm_semantic_cache_store as store_module
from tests.gateway.fakes import FakeUpstream

from ..helpers import Gateway, gateway, header, snapshot

LOOKUP = (
    '<llm-semantic-cache-lookup score-threshold="0.05" embeddings-backend-id="emb" '
    'embeddings-backend-auth="system-assigned" {extra}>{children}</llm-semantic-cache-lookup>'
)


def lookup_doc(extra: str = "", children: str = "", name: str = "llm-semantic-cache-lookup") -> str:
    statement = LOOKUP.format(extra=extra, children=children).replace("llm-semantic-cache-lookup", name)
    return f"<policies><inbound>{statement}</inbound></policies>"


def store_doc(attrs: str) -> str:
    return f"<policies><outbound><llm-semantic-cache-store {attrs}/></outbound></policies>"


def test_every_attribute_of_the_apim_statement_loads_under_both_names() -> None:
    children = "<vary-by>@(context.Subscription.Id)</vary-by><vary-by>@(context.Api.Name)</vary-by>"
    extra = 'ignore-system-messages="true" max-message-count="10"'
    for name in ("llm-semantic-cache-lookup", "azure-openai-semantic-cache-lookup"):
        document = parse_document(lookup_doc(extra, children, name), "api")
        step = document.sections["inbound"][0]
        assert step.name == name and step.threshold == 0.05 and step.max_messages == 10 and len(step.vary_by) == 2
    parse_document(store_doc('duration="60" cache-response="true"'), "api")
    parse_document(store_doc('duration="@(60.ToString())"'), "api")
    parse_document(store_doc('duration="60"').replace("llm-", "azure-openai-"), "api")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (lookup_doc().replace('score-threshold="0.05"', 'score-threshold="1.5"'), "'score-threshold' must be a number"),
        (lookup_doc().replace('score-threshold="0.05"', 'score-threshold="x"'), "'score-threshold' must be a number"),
        (lookup_doc().replace('score-threshold="0.05" ', ""), "missing required attribute 'score-threshold'"),
        (
            lookup_doc().replace('embeddings-backend-id="emb" ', ""),
            "missing required attribute 'embeddings-backend-id'",
        ),
        (lookup_doc().replace("system-assigned", "user-assigned"), "'embeddings-backend-auth' must be one of"),
        (lookup_doc('max-message-count="0"'), "'max-message-count' must be a positive integer"),
        (lookup_doc('ignore-system-messages="yes"'), "'ignore-system-messages' must be true, false"),
        (lookup_doc(children="<vary-by a='1'>x</vary-by>"), "<vary-by> takes no attributes"),
        (lookup_doc(children="<other/>"), "<other> is not allowed inside"),
        (store_doc('duration="0"'), "'duration' must be a whole number of seconds"),
        (store_doc('duration="ten"'), "'duration' must be a whole number of seconds"),
        (store_doc(""), "missing required attribute 'duration'"),
        (store_doc('duration="60" cache-response="maybe"'), "'cache-response' must be true, false"),
        (lookup_doc().replace("<inbound>", "<outbound>").replace("</inbound>", "</outbound>"), "not allowed in the"),
        (store_doc('duration="60"').replace("outbound", "inbound"), "not allowed in the inbound section"),
    ],
)
def test_bad_statements_are_refused_at_load_time(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_document(text, "api")
    assert fragment in info.value.message


def test_an_unknown_embeddings_backend_is_refused_when_the_snapshot_loads() -> None:
    from gateway.policy.base import bind_steps

    class Env:
        def backend(self, backend_id: str):
            raise PolicyError(f"set-backend-service: unknown backend '{backend_id}'")

        def target_for_url(self, url: str):
            raise AssertionError

    steps = parse_document(lookup_doc(), "api").sections["inbound"]
    with pytest.raises(PolicyError, match="unknown embeddings backend 'emb'"):
        bind_steps(steps, Env())


#
# Behaviour in process (the fake pool answers both the model and the embeddings backend)
#

EMB_LOOKUP = LOOKUP.replace('embeddings-backend-id="emb"', 'embeddings-backend-id="openai-backend"')


def respond(status: int = 200):
    def answer(call):
        if call.target.endswith("/embeddings"):
            text = orjson.loads(call.body)["input"]
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            vector = np.random.default_rng(seed).standard_normal(8).tolist()
            return FakeUpstream(body=orjson.dumps({"data": [{"index": 0, "embedding": vector}]}))
        document = {"id": "c1", "object": "chat.completion", "model": "gpt-4o",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}  # fmt: skip
        return FakeUpstream(status=status, body=orjson.dumps(document))

    return answer


def policy(outbound: str, inbound_extra: str = "") -> str:
    return (
        f"<policies><inbound>{EMB_LOOKUP.format(extra='', children='')}{inbound_extra}</inbound>"
        f"<outbound>{outbound}</outbound></policies>"
    )


BODY = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi there"}]})


def model_calls(gw) -> int:
    return sum(1 for call in gw.pool.calls if not call.target.endswith("/embeddings"))


async def test_a_hit_without_a_store_statement_skips_all_of_outbound_and_the_rest_of_inbound() -> None:
    stored = policy('<llm-semantic-cache-store duration="60"/><set-header name="x-out"><value>1</value></set-header>')
    gw = gateway(respond(), api_policy=stored)
    assert header(await gw.chat(body=BODY), b"x-out") == b"1"
    # the same cache (one app), another document: no store, an outbound step and an inbound step after the lookup
    after = '<set-header name="x-in"><value>1</value></set-header>'
    gw.app.snapshot = gateway(respond(), api_policy=policy(after.replace("x-in", "x-out"), after)).app.snapshot
    hit = await gw.chat(body=BODY)
    assert header(hit, b"x-semantic-cache") == b"hit; score=0.0000"
    assert header(hit, b"x-out") is None and header(hit, b"x-in") is None
    assert model_calls(gw) == 1


@pytest.mark.parametrize(
    ("status", "cache_response", "stored"),
    [(200, None, True), (201, None, False), (201, "true", True), (200, "false", False), (500, "true", False)],
)
async def test_what_the_store_keeps(status: int, cache_response: str | None, stored: bool) -> None:
    attr = f' cache-response="{cache_response}"' if cache_response is not None else ""
    gw = gateway(respond(status), api_policy=policy(f'<llm-semantic-cache-store duration="60"{attr}/>'))
    await gw.chat(body=BODY)
    second = await gw.chat(body=BODY)
    assert (header(second, b"x-semantic-cache") or b"").startswith(b"hit") is stored
    assert model_calls(gw) == (1 if stored else 2)


async def test_the_trace_shows_the_miss_the_store_and_then_the_hit() -> None:
    gw = gateway(respond(), api_policy=policy('<llm-semantic-cache-store duration="60"/>'))
    miss = orjson.loads(header(await gw.chat(body=BODY, trace=True), TRACE_HEADER))
    steps = {entry.get("policy"): entry for entry in miss}
    assert steps["llm-semantic-cache-lookup"]["result"] == "miss"
    assert steps["llm-semantic-cache-store"]["stored"] == "stored"
    hit = orjson.loads(header(await gw.chat(body=BODY, trace=True), TRACE_HEADER))
    entry = next(e for e in hit if e.get("policy") == "llm-semantic-cache-lookup")
    assert entry["result"] == "hit" and entry["score"] == 0.0 and entry["score-threshold"] == 0.05


def chat_stream(words: list[str]) -> list[bytes]:
    events = [{"id": "c2", "object": "chat.completion.chunk", "model": "gpt-4o",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]  # fmt: skip
    events += [{"choices": [{"index": 0, "delta": {"content": word}}]} for word in words]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [b"data: " + orjson.dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


def streaming(words: list[str]):
    plain = respond()

    def answer(call):
        if call.target.endswith("/embeddings"):
            return plain(call)
        return FakeUpstream(headers=[(b"content-type", b"text/event-stream")], chunks=chat_stream(words))

    return answer


@pytest.mark.parametrize(("words", "stored"), [(["alpha ", "beta"], True), (["alpha ", "forbidden ", "beta"], False)])
async def test_a_stream_content_safety_cuts_is_not_stored(words: list[str], stored: bool) -> None:
    safety = (
        '<llm-content-safety backend-id="builtin" window-size="20" window-overlap-size="10">'
        "<blocklists><id>words</id></blocklists></llm-content-safety>"
    )
    snap = snapshot(api_policy=policy(f'{safety}<llm-semantic-cache-store duration="60"/>'))
    snap["blocklists"] = [{"name": "words", "items": [{"kind": "term", "value": "forbidden"}]}]
    gw = Gateway(snap, streaming(words))
    body = orjson.dumps({"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Tell me"}]})
    response = await gw.chat(body=body)
    streamed_body = b"".join([chunk async for chunk in response.body_iter])
    assert b"forbidden" not in streamed_body and (b"[DONE]" in streamed_body) is stored  # cut, or whole
    await asyncio.gather(*store_module._pending)  # the entry is written in a task of its own once the request is over
    again = await gw.chat(body=orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Tell me"}]}))
    assert (header(again, b"x-semantic-cache") or b"").startswith(b"hit") is stored


async def test_content_safety_checks_a_cached_answer_too() -> None:
    def answer(call):
        if call.target.endswith("/embeddings"):
            return respond()(call)
        document = {"id": "c3", "object": "chat.completion", "model": "gpt-4o",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "a forbidden answer"},
                                 "finish_reason": "stop"}]}  # fmt: skip
        return FakeUpstream(body=orjson.dumps(document))

    safety = (
        '<llm-content-safety backend-id="builtin" enforce-on-completions="true">'
        "<blocklists><id>words</id></blocklists></llm-content-safety>"
    )

    def snap(term: str) -> dict:
        lookup = EMB_LOOKUP.format(extra="", children="")
        store = '<llm-semantic-cache-store duration="60"/>'
        data = snapshot(
            api_policy=f"<policies><inbound>{safety}{lookup}</inbound><outbound>{store}</outbound></policies>"
        )
        data["blocklists"] = [{"name": "words", "items": [{"kind": "term", "value": term}]}]
        return data

    gw = Gateway(snap("unrelated"), answer)
    assert (await gw.chat(body=BODY)).status == 200  # allowed, and stored
    gw.app.snapshot = Gateway(snap("forbidden"), answer).app.snapshot  # the same cache, a stricter blocklist
    blocked = await gw.chat(body=BODY)
    assert blocked.status == 403
    assert model_calls(gw) == 1  # the cached answer was checked, not a new one


#
# A score-threshold written for the older similarity reading (APIM's AI-Gateway lab: 0.8)
#


def _load_with_threshold(threshold: str) -> None:
    from gateway.snapshot import load_snapshot

    from ..helpers import TOKEN

    statement = EMB_LOOKUP.format(extra="", children="").replace('"0.05"', f'"{threshold}"')
    load_snapshot(snapshot(api_policy=f"<policies><inbound>{statement}</inbound></policies>"), gateway_token=TOKEN)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.snapshot" and r.levelname == "WARNING"]


def test_a_similarity_like_threshold_loads_with_a_warning_naming_the_policy(caplog) -> None:
    with caplog.at_level("WARNING", logger="gateway.snapshot"):
        _load_with_threshold("0.8")
    [warning] = _warnings(caplog)
    assert warning.startswith("API 'aoai' policy: line 1: <llm-semantic-cache-lookup>: score-threshold 0.8")
    assert "nearly any prompt hits" in warning and "the same cut-off is 0.2 here" in warning


def test_a_loose_distance_warns_without_the_similarity_hint_and_a_usual_one_is_quiet(caplog) -> None:
    with caplog.at_level("WARNING", logger="gateway.snapshot"):
        _load_with_threshold("0.3")
        [warning] = _warnings(caplog)
        assert "above 0.2 answers to other questions are served as hits" in warning
        assert "similarity" not in warning
        caplog.clear()
        for usual in ("0.05", "0.1", "0.2"):
            _load_with_threshold(usual)
    assert _warnings(caplog) == []
