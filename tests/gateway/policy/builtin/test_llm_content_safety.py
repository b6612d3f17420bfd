"""llm-content-safety in process: load-time refusals, the built-in engine (normalisation, on-error, trace), windows,
and the stream stage over chunks cut anywhere. The engines over HTTP: test_llm_content_safety_e2e.py."""

from __future__ import annotations

import orjson
import pytest

from gateway.policy import PolicyError, parse_document
from gateway.policy.builtin._safety import severity_of_score, windows
from gateway.policy.builtin.llm_content_safety import CUT_EVENT
from gateway.snapshot import SnapshotError, load_snapshot

from ...fakes import FakeUpstream
from ...helpers import TOKEN
from ..helpers import Gateway, header, snapshot, trace_of, upstream

TWICE = '<category name="Hate" threshold="1"/><category name="Hate" threshold="2"/>'
# NFKC folds full-width letters to ASCII ones
FULL_WIDTH = "".join(chr(ord(c) + 0xFEE0) for c in "forbidden")
FULL_WIDTH_UPPER = "".join(chr(ord(c) + 0xFEE0) for c in "SECRET")
BLOCKED = {"statusCode": 403, "message": "Request failed content safety check."}
WORDS = {"name": "words", "items": [{"kind": "term", "value": "Forbidden"}, {"kind": "regex", "value": "s[e3]cr[e3]t"}]}


def statement(attrs: str = 'backend-id="builtin"', inner: str = "<blocklists><id>words</id></blocklists>") -> str:
    return f"<llm-content-safety {attrs}>{inner}</llm-content-safety>"


def document(inbound: str = "", outbound: str = "", on_error: str = "") -> str:
    return (
        f"<policies><inbound><base/>{inbound}</inbound><backend><base/></backend>"
        f"<outbound><base/>{outbound}</outbound><on-error><base/>{on_error}</on-error></policies>"
    )


def data(api_policy: str) -> dict:
    result = snapshot(api_policy=api_policy)
    result["blocklists"] = [WORDS]
    return result


def chat_body(text: str, stream: bool = False) -> bytes:
    return orjson.dumps({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": text}]})


def completion(text: str) -> FakeUpstream:
    body = orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
    return FakeUpstream(body=body)


def sse(words: list[str], cut_at: int) -> list[bytes]:
    """An SSE chat stream of ``words``, its bytes cut every ``cut_at`` bytes (events split across chunks)."""
    events = b"".join(
        b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": word}}]}) + b"\n\n" for word in words
    )
    events += b"data: [DONE]\n\n"
    return [events[i : i + cut_at] for i in range(0, len(events), cut_at)]


def streamed(chunks: list[bytes]):
    return lambda call: FakeUpstream(headers=[(b"content-type", b"text/event-stream")], chunks=chunks)


async def body_of(response) -> bytes:
    if hasattr(response, "body_iter"):
        return b"".join([chunk async for chunk in response.body_iter])
    return response.body


@pytest.mark.parametrize("prompt", ["this is FORBIDDEN", FULL_WIDTH, "the s3cr3t plan", "Forbidden.", FULL_WIDTH_UPPER])
async def test_the_builtin_engine_blocks_after_normalisation_and_the_model_is_not_called(prompt):
    gw = Gateway(data(document(statement())), lambda call: completion("fine"))
    response = await gw.chat(body=chat_body(prompt))
    assert response.status == 403
    assert orjson.loads(response.body) == BLOCKED
    assert gw.pool.calls == []


@pytest.mark.parametrize("prompt", ["forbiddenness is a made-up word", "secretion", "hello"])
async def test_terms_match_whole_words_only(prompt):
    gw = Gateway(data(document(statement())), lambda call: completion("fine"))
    response = await gw.chat(body=chat_body(prompt))
    assert (response.status, prompt) == (200 if prompt != "secretion" else 403, prompt)  # regexes are not words


async def test_on_error_sees_the_reason_and_the_trace_shows_the_decision():
    on_error = '<set-header name="x-reason"><value>@(context.LastError.Reason)</value></set-header>'
    gw = Gateway(data(document(statement(), on_error=on_error)), lambda call: completion("fine"))
    response = await gw.chat(body=chat_body("forbidden"), trace=True)
    assert header(response, b"x-reason") == b"ContentSafetyViolation"
    entries = [e for e in trace_of(response) if e.get("check") == "prompt"]
    assert entries[0]["outcome"] == "blocked"
    assert entries[0]["reason"] == "Blocklist"
    assert entries[0]["engine"] == "builtin"


async def test_enforce_on_completions_checks_the_buffered_answer():
    attrs = 'backend-id="builtin" enforce-on-completions="true"'
    gw = Gateway(data(document(statement(attrs))), lambda call: completion("a forbidden answer"))
    response = await gw.chat(body=chat_body("hello"))
    assert response.status == 403
    assert len(gw.pool.calls) == 1
    gw = Gateway(data(document(statement())), lambda call: completion("a forbidden answer"))
    assert (await gw.chat(body=chat_body("hello"))).status == 200  # enforce-on-completions is off by default


@pytest.mark.parametrize("cut_at", [1, 7, 50, 10_000])
async def test_a_stream_is_checked_whatever_its_chunking(cut_at):
    words = ["alpha ", "beta ", "gamma ", "delta ", "forbidden ", "omega"]
    # a term is found when it lies inside one window: the overlap (10) must be at least its length (9)
    attrs = 'backend-id="builtin" window-size="20" window-overlap-size="10"'
    gw = Gateway(data(document(outbound=statement(attrs))), streamed(sse(words, cut_at)))
    response = await gw.chat(body=chat_body("hello", stream=True))
    body = await body_of(response)
    assert response.status == 200
    assert body.endswith(CUT_EVENT)
    assert b"forbidden" not in body and b"omega" not in body and b"[DONE]" not in body
    assert b'"alpha "' in body  # the first windows passed


async def test_crlf_events_cut_between_cr_and_lf_are_checked():
    chunks = [c.replace(b"\n", b"\r\n") for c in sse(["alpha ", "forbidden ", "omega"], 10_000)]
    crlf = b"".join(chunks)
    attrs = 'backend-id="builtin" window-size="12" window-overlap-size="10"'
    gw = Gateway(data(document(outbound=statement(attrs))), streamed([crlf[i : i + 1] for i in range(len(crlf))]))
    body = await body_of(await gw.chat(body=chat_body("hello", stream=True)))
    assert body.endswith(CUT_EVENT)
    assert b"forbidden" not in body


@pytest.mark.parametrize("cut_at", [3, 10_000])
async def test_a_safe_stream_passes_unchanged(cut_at):
    chunks = sse(["alpha ", "beta ", "gamma"], cut_at)
    attrs = 'backend-id="builtin" window-size="5"'
    gw = Gateway(data(document(outbound=statement(attrs))), streamed(chunks))
    body = await body_of(await gw.chat(body=chat_body("hello", stream=True)))
    assert body == b"".join(chunks)


def test_windows_overlap():
    assert windows("abcdefghij", None, 0) == ["abcdefghij"]
    assert windows("abcdefghij", 4, 0) == ["abcd", "efgh", "ij"]
    assert windows("abcdefghij", 4, 2) == ["abcd", "cdef", "efgh", "ghij"]


def test_moderation_scores_map_to_severities():
    assert [severity_of_score(s, True) for s in (0.0, 0.124, 0.125, 0.5, 0.99, 1.0)] == [0, 0, 1, 4, 7, 7]
    assert [severity_of_score(s, False) for s in (0.125, 0.3, 0.5, 0.9)] == [0, 2, 4, 6]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("<llm-content-safety />", "missing required attribute 'backend-id'"),
        (statement('backend-id="b" window-size="0"', ""), "'window-size' must be an integer"),
        (statement('backend-id="b" window-size="x"', ""), "'window-size' must be an integer"),
        (statement('backend-id="b" window-overlap-size="2"', ""), "needs window-size"),
        (statement('backend-id="b" window-size="4" window-overlap-size="4"', ""), "must be smaller"),
        (statement('backend-id="b" shield-prompt="maybe"', ""), "'shield-prompt' must be true, false"),
        (statement('backend-id="b" colour="red"', ""), "unknown attribute 'colour'"),
        (statement('backend-id="@(1)"', ""), "expressions are not allowed"),
        (statement(inner='<categories output-type="Nine"/>'), "output-type must be one of"),
        (statement(inner='<categories><category name="Gore" threshold="2"/></categories>'), "name must be one of"),
        (statement(inner='<categories><category name="Hate" threshold="8"/></categories>'), "from 0 to 7"),
        (statement(inner='<categories><category name="Hate"/></categories>'), "missing required attribute"),
        (statement(inner=f"<categories>{TWICE}</categories>"), "appears twice"),
        (statement(inner="<blocklists><name>x</name></blocklists>"), "use <id>"),
        (statement(inner="<blocklists><id> </id></blocklists>"), "a blocklist name is required"),
        (statement(inner="<blocklists/><blocklists/>"), "may appear only once"),
        (statement(inner="<rules/>"), "not allowed inside <llm-content-safety>"),
    ],
)
def test_bad_statements_are_refused_at_load_time(text, fragment):
    with pytest.raises(PolicyError) as info:
        parse_document(document(text), "api")
    assert fragment in info.value.message
    assert info.value.line is not None


def test_the_operation_scope_is_refused():
    with pytest.raises(PolicyError, match="operation"):
        parse_document(document(statement()), "operation")


@pytest.mark.parametrize(
    ("inner", "attrs", "fragment"),
    [
        ("", 'backend-id="nowhere"', "unknown backend 'nowhere'"),
        ("<blocklists><id>missing</id></blocklists>", 'backend-id="builtin"', "unknown blocklist 'missing'"),
        ('<categories><category name="Hate" threshold="2"/></categories>', 'backend-id="builtin"', "no harm class"),
        ("", 'backend-id="builtin" shield-prompt="true"', "shield-prompt needs an engine with prompt shields"),
        ("", 'backend-id="moderation" shield-prompt="true"', "not openai-moderation"),
        ("", 'backend-id="engines"', "backend 'engines' is a pool"),
    ],
)
def test_references_are_checked_when_the_snapshot_loads(inner, attrs, fragment):
    snapshot_data = data(document(statement(attrs, inner)))
    snapshot_data["backends"].append({"name": "moderation", "url": "http://127.0.0.1:9/v1"})
    snapshot_data["backends"].append(
        {"name": "engines", "type": "Pool", "url": None, "pool_services": [{"backend": "moderation"}]}
    )
    with pytest.raises(SnapshotError, match=fragment):
        load_snapshot(snapshot_data, gateway_token=TOKEN)


def test_a_bad_blocklist_in_the_snapshot_is_quarantined():
    snapshot_data = data(None)
    snapshot_data["blocklists"] = [{"name": "bad", "items": [{"kind": "regex", "value": "(a)\\1"}]}]
    loaded = load_snapshot(snapshot_data, gateway_token=TOKEN, quarantine=True)
    assert [(p.kind, p.name) for p in loaded.quarantined] == [("blocklist", "bad")]
    assert "RE2" in loaded.quarantined[0].message


async def test_a_response_that_is_not_successful_is_not_checked():
    gw = Gateway(data(document(outbound=statement())), upstream(500, b'{"error": "forbidden"}'))
    assert (await gw.chat(body=chat_body("hello"))).status == 500


@pytest.mark.parametrize(
    "shape",
    [
        b"data: %s\n\n",  # one data line (the common shape)
        b"event: delta\ndata: %s\n\n",  # a named event
        b": keep-alive\ndata: %s\n\n",  # a comment line first
        b"data:%s\r\n\r\n",  # no space after the colon, CRLF
    ],
)
@pytest.mark.parametrize("as_parts", [False, True])
async def test_every_event_shape_and_content_form_is_checked(shape, as_parts):
    def event(word: str) -> bytes:
        content = [{"type": "text", "text": word}] if as_parts else word
        return shape % orjson.dumps({"choices": [{"index": 0, "delta": {"content": content}}]})

    stream = b"".join(event(w) for w in ["alpha ", "forbidden ", "omega"]) + b"data: [DONE]"  # no final blank line
    attrs = 'backend-id="builtin" window-size="12" window-overlap-size="10"'
    gw = Gateway(
        data(document(outbound=statement(attrs))), streamed([stream[i : i + 5] for i in range(0, len(stream), 5)])
    )
    body = await body_of(await gw.chat(body=chat_body("hello", stream=True)))
    assert body.endswith(CUT_EVENT)
    assert b"forbidden" not in body and b"omega" not in body
