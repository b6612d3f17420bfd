"""Token accounting: tokenizer, prompt estimation, usage extraction from JSON bodies and SSE streams, the exchange."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import orjson
import pytest

from gateway import tokens
from gateway.llm_accounting import LlmExchange
from gateway.tokens import (
    CL100K,
    O200K,
    RequestKind,
    SseUsageMeter,
    TailUsageMeter,
    Tokenizer,
    TokenUsage,
    completion_text_tokens,
    encoding_for_model,
    estimate_prompt_tokens,
    get_tokenizer,
    request_kind,
    usage_from_body,
    usage_from_mapping,
)

from .fakes import make_request

TOK = get_tokenizer()


#
# Tokenizer and estimation
#


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", O200K),
        ("gpt-4o-mini-2024-07-18", O200K),
        ("o3-mini", O200K),
        ("gpt-4.1", O200K),
        ("gpt-5", O200K),
        ("openai/gpt-4o", O200K),
        ("gpt-4", CL100K),
        ("gpt-4-turbo", CL100K),
        ("gpt-3.5-turbo", CL100K),
        ("text-embedding-3-small", CL100K),
        ("gemini-2.0-flash", CL100K),
        (None, CL100K),
        (42, CL100K),
    ],
)
def test_encoding_for_model(model, encoding):
    assert encoding_for_model(model) == encoding


def test_counts_match_the_openai_tables():
    assert TOK.count("hello world", CL100K) == 2
    assert TOK.count("tiktoken is great!", CL100K) == 6
    assert TOK.count("tiktoken is great!", O200K) == 6
    assert TOK.count("", O200K) == 0
    assert TOK.count("<|endoftext|>", CL100K) > 1  # special tokens are ordinary text in a prompt
    assert TOK.count("bad \ud800 surrogate", CL100K) > 0


def test_linear_time_on_hostile_input():
    import time

    started = time.perf_counter()
    assert TOK.count("A" * 200_000, O200K) > 0
    assert time.perf_counter() - started < 1.0


@pytest.mark.skipif(not shutil.which("unshare"), reason="unshare(1) is not installed")
def test_tokenizer_needs_no_network_and_no_cache(tmp_path):
    """In a fresh network namespace (no interfaces) with empty caches, the encoders load and count."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here")
    empty = str(tmp_path)
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": empty, "DATA_GYM_CACHE_DIR": empty, "HOME": empty}
    code = "from gateway.tokens import get_tokenizer as g; t = g(); print(t.count('hello world', 'o200k_base'))"
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    assert list(tmp_path.iterdir()) == []


def test_chat_estimate_follows_openai_accounting():
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hello world"}]}
    # 3 per message + "user" (1) + "hello world" (2) + 3 to prime the reply
    assert estimate_prompt_tokens(body, RequestKind.CHAT, TOK, CL100K) == 9
    body["messages"].append({"role": "assistant", "name": "bob", "content": "hi"})
    assert estimate_prompt_tokens(body, RequestKind.CHAT, TOK, CL100K) == 9 + 3 + 1 + 1 + 1 + 1


def test_chat_estimate_counts_parts_images_and_tools():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                ],
            }
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    }
    estimate = estimate_prompt_tokens(body, RequestKind.CHAT, TOK, O200K)
    assert estimate > 1200 + 3 + 3 + 10


def _counting_tokenizer() -> tuple[Tokenizer, list[str]]:
    """A tokenizer whose count is the text's length, recording every text it is asked to count."""
    asked: list[str] = []

    def count(text: str) -> int:
        asked.append(text)
        return len(text)

    return Tokenizer({CL100K: count}, CL100K), asked


def test_prompt_estimation_remembers_the_counts_of_texts_it_counted():
    tokenizer, asked = _counting_tokenizer()
    body = {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}],
        "tools": [{"type": "function"}],
    }
    first = estimate_prompt_tokens(body, RequestKind.CHAT, tokenizer, CL100K)
    assert sorted(asked) == sorted(["system", "be brief", "user", "hello world", '[{"type":"function"}]'])
    asked.clear()
    assert estimate_prompt_tokens(body, RequestKind.CHAT, tokenizer, CL100K) == first
    assert estimate_prompt_tokens(body, RequestKind.CHAT, tokenizer, None) == first  # the default is the same counter
    assert asked == []  # every text was remembered
    body["messages"].append({"role": "user", "content": "and again"})
    estimate_prompt_tokens(body, RequestKind.CHAT, tokenizer, "unknown_base")
    assert asked == ["and again"]


def test_prompt_estimation_counts_each_tool_and_format_member_as_json():
    tokenizer, asked = _counting_tokenizer()
    body = {
        "messages": [],
        "tools": [{"type": "function"}],
        "functions": [{"name": "f"}],
        "response_format": {"type": "json_object"},
        "text": {"format": {"type": "text"}},
    }
    expected = ['[{"type":"function"}]', '[{"name":"f"}]', '{"type":"json_object"}', '{"format":{"type":"text"}}']
    assert estimate_prompt_tokens(body, RequestKind.CHAT, tokenizer, CL100K) == 3 + sum(map(len, expected))
    assert asked == expected
    asked.clear()
    empty = {"messages": [], "tools": [], "functions": None, "response_format": "json", "text": {}}
    assert estimate_prompt_tokens(empty, RequestKind.CHAT, tokenizer, CL100K) == 3  # empty or not a list/object
    assert asked == []


def test_prompt_estimation_forgets_at_its_bounds(monkeypatch):
    monkeypatch.setattr(tokens, "REMEMBER_TEXT", 8)
    monkeypatch.setattr(tokens, "REMEMBER_CHARS", 20)
    tokenizer, asked = _counting_tokenizer()
    long = {"prompt": "x" * 9}  # longer than REMEMBER_TEXT: counted every time
    assert [estimate_prompt_tokens(long, RequestKind.COMPLETIONS, tokenizer, CL100K) for _ in range(2)] == [9, 9]
    assert asked == ["x" * 9] * 2
    asked.clear()
    for text in ("a" * 8, "b" * 8, "a" * 8, "c" * 8, "a" * 8):  # the third text overflows 20 characters: all forgotten
        assert estimate_prompt_tokens({"prompt": text}, RequestKind.COMPLETIONS, tokenizer, CL100K) == 8
    assert asked == ["a" * 8, "b" * 8, "c" * 8, "a" * 8]


def test_prompt_estimation_counts_lone_surrogates_on_the_repaired_text():
    body = {"messages": [{"role": "user", "content": "bad \ud800 surrogate"}]}
    repaired = {"messages": [{"role": "user", "content": "bad ? surrogate"}]}
    for _ in range(2):  # counted, then remembered
        assert estimate_prompt_tokens(body, RequestKind.CHAT, TOK, CL100K) == estimate_prompt_tokens(
            repaired, RequestKind.CHAT, TOK, CL100K
        )


def test_completion_text_counts_lone_surrogates_on_the_repaired_text():
    document = {"choices": [{"text": "a \ud800", "message": {"role": "assistant", "content": "b \ud800"}}]}
    repaired = {"choices": [{"text": "a ?", "message": {"role": "assistant", "content": "b ?"}}]}
    count = TOK.counter(CL100K)
    assert completion_text_tokens(document, count) == completion_text_tokens(repaired, count)


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        (RequestKind.COMPLETIONS, {"prompt": "hello world"}, 2),
        (RequestKind.COMPLETIONS, {"prompt": ["hello", "world"]}, 2),
        (RequestKind.EMBEDDINGS, {"input": [1, 2, 3, 4]}, 4),
        (RequestKind.EMBEDDINGS, {"input": [[1, 2], [3]]}, 3),
        (RequestKind.RESPONSES, {"input": "hello world", "instructions": "be brief"}, 4),
        (RequestKind.OTHER, {"prompt": "hello"}, 0),
    ],
)
def test_other_estimates(kind, body, expected):
    assert estimate_prompt_tokens(body, kind, TOK, CL100K) == expected


def test_request_kind():
    assert request_kind("/chat/completions") == RequestKind.CHAT
    assert request_kind("/v1/completions") == RequestKind.COMPLETIONS
    assert request_kind("/deployments/x/embeddings") == RequestKind.EMBEDDINGS
    assert request_kind("/responses/") == RequestKind.RESPONSES
    assert request_kind("/images/generations") == RequestKind.OTHER


#
# Whole bodies
#


def test_usage_from_body_and_mapping():
    body = orjson.dumps(
        {
            "model": "gpt-4o",
            "usage": {
                "prompt_tokens": 11,
                "completion_tokens": 7,
                "total_tokens": 18,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        }
    )
    usage, model, _ = usage_from_body(body)
    assert usage_from_mapping(usage, model) == TokenUsage(11, 7, 18, "gpt-4o", False, 4, 2)
    responses = {"input_tokens": 5, "output_tokens": 6, "total_tokens": 11}
    assert usage_from_mapping(responses, None) == TokenUsage(5, 6, 11)
    assert usage_from_mapping({"prompt_tokens": 3}, None) == TokenUsage(3, 0, 3)  # embeddings
    assert usage_from_body(b"not json") == (None, None, None)
    assert usage_from_body(b"[1]") == (None, None, None)
    assert usage_from_body(b' \n {"usage":{"prompt_tokens":1}}')[0] == {"prompt_tokens": 1}  # leading whitespace
    assert usage_from_body(b"") == (None, None, None)


@pytest.mark.parametrize(
    ("body", "usage", "model"),
    [
        (b'{"usage":1,"usage":{"prompt_tokens":2},"model":"m"}', {"prompt_tokens": 2}, "m"),  # the last key wins
        (b'{"usage":{"prompt_tokens":2},"usage":null,"model":"m"}', None, "m"),
        (b'{"usage":null,"model":"m"}', None, "m"),
        (b'{"usage":[1],"model":"m"}', None, "m"),
        (b'{"usage":"12","model":"m"}', None, "m"),
        (b'{"usage":{},"model":7}', {}, None),
        (b'{"usage":{"total_tokens":1.5e3},"model":"m\\u00e9"}', {"total_tokens": 1500.0}, "m\u00e9"),  # an escape
        (b'{"usage":{"total_tokens":18446744073709551616}}', {"total_tokens": 1.8446744073709552e19}, None),
        ('{"usage":{"prompt_tokens":1},"model":"gpt-4o-\u00e9"}'.encode(), {"prompt_tokens": 1}, "gpt-4o-\u00e9"),
        (b'\t\r\n {"usage":{"prompt_tokens":1}} \n', {"prompt_tokens": 1}, None),
        (b'{"response":{"usage":{"input_tokens":3},"model":"m"},"model":"x"}', {"input_tokens": 3}, "m"),
        (b'{"usage":null,"response":{"usage":{"input_tokens":3}},"model":"x"}', {"input_tokens": 3}, None),
        (b'{"usage":{"input_tokens":3},"response":{"usage":{"input_tokens":4}}}', {"input_tokens": 3}, None),
        (b'{"response":[],"model":"m"}', None, "m"),
        (b'{"response":{"usage":[],"model":1}}', None, None),
        (b'{"usage":{"prompt_tokens":1},"x":1e400}', None, None),  # not valid for orjson: no usage at all
        (b'{"usage":{"prompt_tokens":1},"x":"\xff"}', None, None),  # not UTF-8
        (b'{"usage":{"prompt_tokens":1}', None, None),  # truncated
        (b'{"usage":{"prompt_tokens":1}} x', None, None),
        (b'\xef\xbb\xbf{"usage":{"prompt_tokens":1}}', None, None),  # a byte order mark
        (b'"usage"', None, None),
        (b"null", None, None),
    ],
)
def test_usage_from_body_shapes(body, usage, model):
    got_usage, got_model, document = usage_from_body(body)
    assert (got_usage, got_model) == (usage, model)
    assert type(got_usage) is (dict if usage is not None else type(None))
    if got_usage is not None:
        assert got_usage in (document.get("usage"), document.get("response", {}).get("usage"))


@pytest.mark.parametrize(
    ("value", "counted"),
    [(5, 5), (0, 0), (-1, 0), (10**16, 10**15), (16.0, 16), (16.5, 0), ("16", 16), (True, 0), (None, 0), ([1], 0)],
)
def test_usage_counts_are_read_like_int(value, counted):
    # Each count of usage_from_mapping (plain ints inline, the rest through _int) reads the same.
    usage = usage_from_mapping(
        {
            "prompt_tokens": value,
            "completion_tokens": value,
            "total_tokens": value,
            "prompt_tokens_details": {"cached_tokens": value},
            "completion_tokens_details": {"reasoning_tokens": value},
        },
        "m",
    )
    assert usage == TokenUsage(counted, counted, counted or 2 * counted, "m", False, counted, counted)


def _with_details(prompt: str, completion: str, *, other: str) -> dict:
    """A usage object named the chat way (``prompt``/``completion``) or the Responses way (``input``/``output``), with
    both detail members, and a cached count under the ``other`` kind's name, which must be ignored."""
    return {
        f"{prompt}_tokens": 3,
        f"{completion}_tokens": 4,
        "total_tokens": 7,
        f"{prompt}_tokens_details": {"cached_tokens": 1},
        f"{completion}_tokens_details": {"reasoning_tokens": 2},
        f"{other}_tokens_details": {"cached_tokens": 9},
    }


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 9}, TokenUsage(3, 4, 9, "m")),
        ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": None}, TokenUsage(3, 4, 7, "m")),
        ({"prompt_tokens": 3, "completion_tokens": 4}, TokenUsage(3, 4, 7, "m")),
        ({"completion_tokens": 4, "total_tokens": 9}, TokenUsage(0, 4, 9, "m")),
        ({"prompt_tokens": None, "input_tokens": 5, "output_tokens": 6}, TokenUsage(0, 0, 0, "m")),  # chat names win
        ({"input_tokens": 5, "output_tokens": 6, "total_tokens": 11}, TokenUsage(5, 6, 11, "m")),
        (_with_details("input", "output", other="prompt"), TokenUsage(3, 4, 7, "m", False, 1, 2)),
        (_with_details("prompt", "completion", other="input"), TokenUsage(3, 4, 7, "m", False, 1, 2)),
        (
            {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "completion_tokens_details": None},
            TokenUsage(3, 4, 7, "m"),
        ),
        (
            {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": "2"}},
            TokenUsage(3, 4, 7, "m", False, 2, 0),
        ),
        ({"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": [1]}, TokenUsage(3, 4, 7, "m")),
        ({}, TokenUsage(0, 0, 0, "m")),
    ],
)
def test_usage_names_and_details(usage, expected):
    # The three Chat Completions counts are read by subscript, any other shape by name: the same figures either way.
    assert usage_from_mapping(usage, "m") == expected


def test_token_usage_is_immutable():
    usage = usage_from_mapping({"prompt_tokens": 1, "completion_tokens": 2}, "m")
    assert type(usage) is TokenUsage and usage.total_tokens == 3 and usage.model == "m" and not usage.estimated
    with pytest.raises(AttributeError):
        usage.prompt_tokens = 5  # type: ignore[misc]


#
# Streams
#


def chat_events(n: int, *, usage: bool, model: str = "gpt-4o") -> list[bytes]:
    def event(data: dict) -> bytes:
        return b"data: " + orjson.dumps(data) + b"\n\n"

    head = {"id": "c1", "object": "chat.completion.chunk", "model": model}
    out = [event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    out += [event({**head, "choices": [{"index": 0, "delta": {"content": f" word{i}"}}]}) for i in range(n)]
    out.append(event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if usage:
        usage_data = {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}
        out.append(event({**head, "choices": [], "usage": usage_data}))
    out.append(b"data: [DONE]\n\n")
    return out


def run_meter(chunks: list[bytes], *, strip: bool, complete: bool = True) -> tuple[bytes, SseUsageMeter, list]:
    done: list = []
    meter = SseUsageMeter(TOK.counter(O200K), lambda m, c: done.append(c), strip=strip)
    out = b"".join(meter.feed(c) for c in chunks) + meter.finish(complete)
    return out, meter, done


def splits(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
def test_sse_passthrough_is_byte_identical_and_counts(size):
    stream = b"".join(chat_events(5, usage=True))
    out, meter, done = run_meter(splits(stream, size), strip=False)
    assert out == stream
    assert meter.usage == {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    assert meter.completion_tokens == 10  # " word0" … " word4": 2 tokens each with o200k
    assert meter.model == "gpt-4o" and done == [True]


@pytest.mark.parametrize("size", [1, 2, 5, 33, 10_000])
def test_sse_strip_removes_only_the_usage_event(size):
    with_usage = chat_events(3, usage=True)
    expected = b"".join(e for e in with_usage if b'"choices":[]' not in e)
    out, meter, _ = run_meter(splits(b"".join(with_usage), size), strip=True)
    assert out == expected
    assert b"usage" not in out
    assert meter.usage is not None and meter.usage["total_tokens"] == 12


def test_sse_strip_keeps_usage_that_rides_on_a_content_event():
    event = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n'
    )
    out, meter, _ = run_meter([event, b"data: [DONE]\n\n"], strip=True)
    assert out == event + b"data: [DONE]\n\n"
    assert meter.usage["total_tokens"] == 2


def test_sse_counts_a_cancelled_stream():
    events = chat_events(10, usage=True)
    _, meter, done = run_meter(events[:4], strip=False, complete=False)  # role + 3 words, then the client left
    assert meter.usage is None and meter.completion_tokens == 6 and done == [False]


def count_calls(monkeypatch, name: str) -> list[bytes]:
    """The arguments of every call of the meter's method ``name`` from now on."""
    calls: list[bytes] = []
    method = getattr(SseUsageMeter, name)

    def counting(self, data):
        calls.append(data)
        return method(self, data)

    monkeypatch.setattr(SseUsageMeter, name, counting)
    return calls


def count_parses(monkeypatch) -> list[bytes]:
    return count_calls(monkeypatch, "_parse")


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_sse_deltas_are_parsed_only_when_their_count_is_needed(monkeypatch, size):
    parsed = count_parses(monkeypatch)
    stream = b"".join(chat_events(5, usage=True))
    out, meter, _ = run_meter(splits(stream, size), strip=False)
    assert out == stream and meter.usage is not None
    assert len(parsed) == 2  # the first event (the model) and the usage; the deltas wait, unparsed
    assert meter.completion_tokens == 10 and meter.events == 8 and not meter._pending


def test_sse_deltas_with_a_null_usage_wait_too(monkeypatch):
    parsed = count_parses(monkeypatch)
    events = chat_events(4, usage=True)
    events = [e.replace(b'"model"', b'"usage":null,"model"') if b'"choices":[{' in e else e for e in events]
    events.insert(1, b'data: {"model":"gpt-4o","choices":[{"delta":{"content":"usage"}}],"usage":null}\n\n')
    out, meter, _ = run_meter([b"".join(events)], strip=True)
    assert out == b"".join(e for e in events if b'"choices":[]' not in e)
    assert len(parsed) == 3  # the first event, the usage, and the word "usage" in a delta (parsed at once, to be safe)
    assert meter.usage["total_tokens"] == 13 and meter.completion_tokens == 1 + 8


@pytest.mark.parametrize("strip", [False, True])
def test_sse_reads_of_whole_plain_lines_match_one_read(monkeypatch, strip):
    """A read of whole lines of plain deltas is set aside by ``feed`` at once; a read with anything else (the word
    "usage" in a delta, an escape, the usage event, a partial line) goes through ``_scan``. Either way the client
    gets the same bytes, and the same events are parsed, as when the stream arrives in one read."""
    parsed = count_parses(monkeypatch)
    events = chat_events(4, usage=True)
    events = [e.replace(b'"model"', b'"usage":null,"model"') if b'"choices":[{' in e else e for e in events]
    events.insert(2, b'data: {"model":"gpt-4o","choices":[{"delta":{"content":"usage"}}],"usage":null}\n\n')
    events.insert(3, b'data: {"choices":[{"delta":{"content":"\\u0041"}}],"usage":null}\n\n')
    events.insert(4, b'data: {"choices":[{"delta":{"content":"two"}}]}\n\ndata: {"choices":[]}\n\n')
    events.insert(5, b'data: {"choices":[{"delta":{"content":"par')  # a line split across reads
    events.insert(6, b'ted"}}]}\n\n')
    outcomes = []
    for reads in (events, [b"".join(events)]):
        parsed.clear()
        out, meter, done = run_meter(reads, strip=strip)
        outcomes.append((out, list(parsed), meter.usage, meter.model, meter.completion_tokens, meter.events, done))
    assert outcomes[0] == outcomes[1]
    count = TOK.counter(O200K)
    texts = ["usage", "A", "two", "parted"] + [f" word{i}" for i in range(4)]
    assert outcomes[0][4] == sum(count(text) for text in texts)


@pytest.mark.parametrize(
    "extra",
    [
        None,
        b'data: {"choices":[{"delta":{"content":"\\u0041"}}],"usage":null}\n\n',
        b'data: {"type":"x","response":{"model":"gpt-4.1"},"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n',
    ],
)
@pytest.mark.parametrize("usage", [False, True])
def test_sse_the_rest_of_a_stream_read_whole_matches_event_reads(monkeypatch, extra, usage):
    """How the gateway feeds a stream that came in one read (forward.UpstreamBody): its first event, then all the
    rest at once, which holds the usage event (or no usage, an escape or a "response" key among plain deltas).
    The client gets the same bytes, and the same events are parsed, as when each event is a read of its own."""
    parsed = count_parses(monkeypatch)
    events = chat_events(32, usage=usage)
    events = [e.replace(b'"model"', b'"usage":null,"model"') if b'"choices":[{' in e else e for e in events]
    if extra is not None:
        events.insert(9, extra)
    outcomes = []
    for reads in (events, [events[0], b"".join(events[1:])]):
        parsed.clear()
        out, meter, done = run_meter(reads, strip=False)
        outcomes.append((out, list(parsed), meter.usage, meter.model, meter.completion_tokens, meter.events, done))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == b"".join(events)
    assert len(outcomes[0][1]) == 1 + usage + (extra is not None)  # the first event, the usage, the extra line


_USAGE_ONLY = (
    b'data: {"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}'
)


@pytest.mark.parametrize(
    "first",
    [
        b'data: {"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\n\n',
        b'data: {"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello there"}}]}\n\n',
        _USAGE_ONLY + b"\n\n",
        _USAGE_ONLY.replace(b'"usage"', b'"\\u0075sage"') + b"\n\n",
        b'data:{"model":"gpt-4o","choices":[{"delta":{"content":"no space"}}]}\n\n',
        b'data: {"model":"gpt-4o","choices":[{"delta":{"content":"crlf"}}]}\r\n\n',
        _USAGE_ONLY + b"\r\n\n",
        b'data: {"model":"gpt-4o","choices":[{"delta":{"content":"crlf"}}]}\r\n\r\n',
        b"data: [DONE]\n\n",
        b"data: not json\n\n",
        b'data: ["a list"]\n\n',
        b'data: {"model":"gpt-4o","choices":[{"delta":{"content":"two"}}]}\n\ndata: [DONE]\n\n',
        b'event: message\ndata: {"model":"gpt-4o","choices":[{"delta":{"content":"named"}}]}\n\n',
        b": a comment\n\n",
    ],
)
@pytest.mark.parametrize("strip", [False, True])
def test_sse_a_first_read_of_one_event_matches_the_line_by_line_reading(monkeypatch, first, strip):
    """A read of one single-line event before the model is known (the forwarder cuts a stream's first event off
    its read) is accounted by ``feed`` without ``_scan``. The client gets the same bytes, and the same events are
    parsed with the same counts, as when the same event arrives a byte at a time (``_scan``, line by line), with
    a stream after it: a content delta, a usage event, ``[DONE]``."""
    parsed = count_parses(monkeypatch)
    scans = count_calls(monkeypatch, "_scan")
    rest = [
        b'data: {"model":"gpt-4o","choices":[{"delta":{"content":" more words"}}],"usage":null}\n\n',
        _USAGE_ONLY.replace(b":5}", b":7}").replace(b":3,", b":5,") + b"\n\n",
        b"data: [DONE]\n\n",
    ]
    outcomes = []
    for reads in ([first, *rest], [*splits(first, 1), *rest]):
        parsed.clear()
        scans.clear()
        out, meter, done = run_meter(reads, strip=strip)
        outcomes.append((out, list(parsed), meter.usage, meter.model, meter.completion_tokens, meter.events, done))
        if reads[0] is first:
            one_line = first.startswith(b"data:") and first.find(b"\n") == len(first) - 2
            assert (first not in scans) == one_line  # the one-line event went around _scan; anything else did not
    assert outcomes[0] == outcomes[1]
    if strip:
        assert b'"choices":[]' not in outcomes[0][0] or b"\\u0075sage" in first
    else:
        assert outcomes[0][0] == first + b"".join(rest)


def test_sse_many_deltas_are_counted_in_bounded_memory():
    events = chat_events(3000, usage=False)
    _, meter, done = run_meter(events, strip=False, complete=False)
    assert sum(len(p) for p in meter._pending) <= 64 << 10
    count = TOK.counter(O200K)
    assert meter.completion_tokens == sum(count(f" word{i}") for i in range(3000)) and done == [False]


def test_sse_usage_behind_escapes_is_found():
    events = chat_events(2, usage=False)
    usage = b'{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}'
    events.insert(-1, b'data: {"choices":[],"\\u0075sage":' + usage + b"}\n\n")
    out, meter, _ = run_meter(events, strip=True)
    assert meter.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert b"u0075sage" not in out


def test_sse_last_line_without_newline():
    data = b'data: {"choices":[{"delta":{"content":"hello"}}]}'
    out, meter, _ = run_meter([data], strip=True)
    assert out == data and meter.completion_tokens == 1


def test_sse_counts_completions_tool_calls_and_responses_events():
    events = [
        b'data: {"choices":[{"text":"hello world"}]}\n\n',
        b'data: {"choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":"{\\"a\\": 1}"}}]}}]}\n\n',
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi there"}\n\n',
        b'event: response.completed\ndata: {"type":"response.completed","response":{"model":"gpt-4.1",'
        b'"usage":{"input_tokens":4,"output_tokens":9,"total_tokens":13}}}\n\n',
    ]
    _, meter, _ = run_meter(events, strip=False)
    assert meter.completion_tokens > 2 + 1 + 2
    assert usage_from_mapping(meter.usage, meter.model) == TokenUsage(4, 9, 13, "gpt-4.1")


def test_sse_gives_up_on_an_endless_line():
    big = b"data: " + b"x" * (2 << 20)
    out, meter, _ = run_meter([big[:1000], big[1000:], b"\n\ndata: [DONE]\n\n"], strip=True)
    assert out == big + b"\n\ndata: [DONE]\n\n" and meter.broken


def test_tail_meter_reads_usage_of_a_large_body():
    body = orjson.dumps(
        {
            "model": "text-embedding-3-small",
            "data": [{"embedding": [0.5] * 50_000}],
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )
    got: list = []
    meter = TailUsageMeter(lambda usage, model, complete: got.append((usage, model)))
    assert b"".join(meter.feed(c) for c in splits(body, 8192)) == body
    meter.finish(True)
    assert got == [({"prompt_tokens": 8, "total_tokens": 8}, "text-embedding-3-small")]


#
# The exchange
#


def make_ctx(body: bytes, *, path: str = "/chat/completions", api_type: str = "openai", headers=()):
    request = make_request("POST", "/x" + path, body=body)
    return SimpleNamespace(
        request=request,
        forward_path=path,
        api=SimpleNamespace(api_type=api_type),
        request_headers=[(b"accept-encoding", b"gzip"), *headers],
        llm=None,
        json_body=None,
    )


def test_stream_options_are_added_without_reserialising():
    raw = b'{ "model":"gpt-4o",  "stream":true, "messages":[{"role":"user","content":"hi"}]}'
    ctx = make_ctx(raw)
    exchange = LlmExchange(ctx)
    assert exchange.stream and exchange.injected_usage and not exchange.client_wants_usage
    sent = exchange.upstream_body(raw)
    assert (
        sent == b'{"stream_options":{"include_usage":true}, "model":"gpt-4o",  "stream":true, '
        b'"messages":[{"role":"user","content":"hi"}]}'
    )
    assert orjson.loads(sent)["stream_options"] == {"include_usage": True}
    assert ctx.request_headers == []  # Accept-Encoding is not forwarded: the gateway must read the usage
    assert exchange.upstream_body(b'{"replaced": true}') == b'{"replaced": true}'  # a policy's new body is kept


def test_existing_stream_options_are_merged():
    raw = b'{"stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}'
    exchange = LlmExchange(make_ctx(raw))
    sent = orjson.loads(exchange.upstream_body(raw))
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}


def test_null_stream_options_are_replaced_not_duplicated():
    raw = b'{"stream":true,"stream_options":null,"messages":[]}'
    exchange = LlmExchange(make_ctx(raw))
    sent = exchange.upstream_body(raw)
    assert sent.count(b"stream_options") == 1  # a second member would leave the backend reading the null
    assert orjson.loads(sent)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("raw", "path", "api_type"),
    [
        (b'{"stream":true,"stream_options":{"include_usage":true}}', "/chat/completions", "openai"),  # client asked
        (b'{"stream":false,"messages":[]}', "/chat/completions", "openai"),
        (b'{"stream":true,"input":"x"}', "/responses", "openai"),  # usage always comes in response.completed
        (b'{"stream":true,"messages":[]}', "/chat/completions", "passthrough"),
    ],
)
def test_body_left_alone(raw, path, api_type):
    exchange = LlmExchange(make_ctx(raw, path=path, api_type=api_type))
    assert exchange.upstream_body(raw) is raw


def test_escaped_stream_key_still_gets_the_usage_injected():
    # The request is parsed at once only when its bytes could hold a "stream" member: '"stream"', or any escape.
    raw = b'{"str\\u0065am":true,"messages":[]}'
    exchange = LlmExchange(make_ctx(raw))
    assert exchange.stream and exchange.injected_usage
    assert orjson.loads(exchange.upstream_body(raw))["stream_options"] == {"include_usage": True}


def test_request_without_stream_is_parsed_only_when_read():
    raw = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    exchange = LlmExchange(make_ctx(raw))
    assert not exchange.injected_usage and not exchange._parsed  # no stream possible: nothing parsed yet
    assert exchange.upstream_body(raw) is raw
    assert exchange.model == "gpt-4o" and exchange._parsed
    assert exchange.body == orjson.loads(raw)
    assert exchange.encoding == O200K and not exchange.stream and not exchange.client_wants_usage


def test_the_object_the_body_check_parsed_is_taken_for_the_same_bytes_only():
    raw = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    document = orjson.loads(raw)
    ctx = make_ctx(raw)
    ctx.json_body = raw, document
    exchange = LlmExchange(ctx)
    assert exchange.body is document and exchange.model == "gpt-4o" and exchange.stream
    other = make_ctx(raw)
    other.json_body = bytes(bytearray(raw)), document  # equal bytes, another object: a body a policy replaced
    replaced = LlmExchange(other)
    assert replaced.body == document and replaced.body is not document
    # Without "stream" in its bytes a body is parsed when first read; one the check parsed is taken at once.
    plain = make_ctx(b'{"model":"gpt-4o"}')
    plain.json_body = plain.request.body, {"model": "gpt-4o"}
    taken = LlmExchange(plain)
    assert taken._parsed and not LlmExchange(make_ctx(plain.request.body))._parsed
    assert (taken.body, taken.model, taken.encoding, taken.stream) == ({"model": "gpt-4o"}, "gpt-4o", O200K, False)


@pytest.mark.parametrize(
    ("raw", "body", "stream", "model"),
    [
        (b'{"model":"gpt-4","stream":true}', {"model": "gpt-4", "stream": True}, True, "gpt-4"),
        (b'{"model":"gpt-4","stream":"true"}', {"model": "gpt-4", "stream": "true"}, False, "gpt-4"),
        (b'{"model":42}', {"model": 42}, False, None),
        (b"[1]", None, False, None),
        (b'{"model":"x"', None, False, None),  # not JSON
        (b"", None, False, None),
    ],
)
def test_lazy_fields_match_the_body(raw, body, stream, model):
    for read_first in ("body", "model", "encoding", "stream", "client_wants_usage"):
        exchange = LlmExchange(make_ctx(raw))
        getattr(exchange, read_first)
        assert (exchange.body, exchange.stream, exchange.model) == (body, stream, model)
        assert exchange.encoding == encoding_for_model(model)


def test_non_json_body_has_no_estimate_but_the_usage_is_still_read():
    ctx = make_ctx(b"plain text")
    exchange = LlmExchange(ctx)
    assert exchange.body is None and exchange.prompt_estimate() == 0
    assert ctx.request_headers == []  # issue #7: the usage is read whatever the request was, so ask for identity


@pytest.mark.parametrize(
    ("body", "path", "cap"),
    [
        ({"max_tokens": 50}, "/chat/completions", (50, 1)),
        ({"max_completion_tokens": 70, "max_tokens": 50, "n": 3}, "/chat/completions", (70, 3)),
        ({"max_tokens": 16, "best_of": 4, "n": 2}, "/completions", (16, 4)),
        ({"max_output_tokens": 99}, "/responses", (99, 1)),
        ({"messages": []}, "/chat/completions", (None, 1)),
        ({"input": "x"}, "/embeddings", (0, 1)),
    ],
)
def test_completion_cap(body, path, cap):
    assert LlmExchange(make_ctx(orjson.dumps(body), path=path)).completion_cap() == cap
