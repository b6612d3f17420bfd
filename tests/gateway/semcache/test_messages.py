"""What is embedded, what is stored, and the SSE replay (which the assembler reads back to the same document)."""

from __future__ import annotations

import orjson
import pytest

from gateway.semcache.messages import (
    CHAT,
    COMPLETIONS,
    StreamAssembler,
    entry_from_json,
    prompt_text,
    replay_id,
    replay_json,
    replay_sse,
)

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris is the capital. " * 9}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 45, "total_tokens": 54},
}


def test_prompt_text_per_role_without_system_messages_when_asked() -> None:
    body = {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]}
    assert prompt_text(body, CHAT, False, None) == "system: Be terse.\nuser: Hi"
    assert prompt_text(body, CHAT, True, None) == "user: Hi"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert prompt_text(parts, CHAT, True, None) == "user: a\nb"
    assert prompt_text({"prompt": "Once upon"}, COMPLETIONS, True, None) == "Once upon"


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "Hi"}], "n": 2},
        {"messages": [{"role": "user", "content": "Hi"}], "tools": []},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {"messages": [{"role": "system", "content": "only system"}]},
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ]
        },
        {"messages": []},
    ],
)
def test_requests_the_cache_does_not_handle(body: dict) -> None:
    assert prompt_text(body, CHAT, True, 2) is None


def test_replay_frames_the_answer_as_openai_streams_it_and_the_assembler_reads_it_back() -> None:
    sse = replay_sse(ANSWER, CHAT, include_usage=True, response_id="chatcmpl-2")
    events = sse.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    chunks = [orjson.loads(e[6:]) for e in events[:-2]]
    assert len(chunks) > 4  # role, several content pieces, finish, usage
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {chunk["id"] for chunk in chunks} == {"chatcmpl-2"}  # the replay's own id, on every chunk
    assert chunks[-1] == {"id": "chatcmpl-2", "created": 1, "model": "gpt-4o-mini", "object": "chat.completion.chunk",
                          "choices": [], "usage": ANSWER["usage"]}  # fmt: skip
    assembler = StreamAssembler(CHAT, 1 << 20)
    for i in range(0, len(sse), 7):  # cut anywhere, even inside an event
        assembler.feed(sse[i : i + 7])
    document = assembler.document()
    assert document is not None
    assert document["choices"] == ANSWER["choices"] and document["usage"] == ANSWER["usage"]
    assert b'"usage"' not in replay_sse(ANSWER, CHAT, include_usage=False, response_id="chatcmpl-2")


def test_a_json_replay_has_its_own_id_and_the_stored_content() -> None:
    replayed = orjson.loads(replay_json(ANSWER, "chatcmpl-3"))
    assert replayed == {**ANSWER, "id": "chatcmpl-3"}
    assert ANSWER["id"] == "chatcmpl-1"  # the entry itself is left as stored


def test_replay_ids_are_openai_shaped_and_follow_the_request_id() -> None:
    request_id = b"3f2a9c1e-5b7d-4e21-9a0b-00000000002a"
    assert replay_id(CHAT, request_id) == "chatcmpl-3f2a9c1e5b7d4e219a0b00000000002a"
    assert replay_id(COMPLETIONS, request_id) == "cmpl-3f2a9c1e5b7d4e219a0b00000000002a"


@pytest.mark.parametrize(
    "stream",
    [
        b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}\n\n',  # no [DONE]
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\ndata: [DONE]\n\n',  # no finish reason
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]},"finish_reason":"tool_calls"}]}\n\n'
        b"data: [DONE]\n\n",
        b'data: {"error":{"message":"overloaded"}}\n\ndata: [DONE]\n\n',
        b"data: {not json\n\ndata: [DONE]\n\n",
    ],
)
def test_incomplete_or_unstorable_streams_give_no_document(stream: bytes) -> None:
    assembler = StreamAssembler(CHAT, 1 << 20)
    assembler.feed(stream)
    assert assembler.document({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}) is None


def test_json_answers_with_tool_calls_or_without_a_finish_reason_are_not_stored() -> None:
    assert entry_from_json(orjson.dumps(ANSWER), CHAT) is not None
    tool = {**ANSWER, "choices": [{"index": 0, "finish_reason": "tool_calls",
                                   "message": {"role": "assistant", "content": None, "tool_calls": [{}]}}]}  # fmt: skip
    assert entry_from_json(orjson.dumps(tool), CHAT) is None
    unfinished = {**ANSWER, "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}]}
    assert entry_from_json(orjson.dumps(unfinished), CHAT) is None
    assert entry_from_json(b"not json", CHAT) is None


def test_the_head_takes_each_field_from_the_first_event_that_has_it() -> None:
    def event(data: dict) -> bytes:
        return b"data: " + orjson.dumps(data) + b"\n\n"

    stream = (
        event({"id": "chatcmpl-1", "choices": [{"index": 1, "delta": {"role": "assistant", "content": "B"}}]})
        + event({"id": "other", "model": "m", "created": 2, "choices": [{"index": 0, "delta": {"content": "A"}}]})
        + event({"system_fingerprint": "fp", "model": "later", "choices": [{"index": 1, "delta": {"content": "b"}}]})
        + event(
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}, {"index": 1, "finish_reason": "length"}]}
        )
        + b"data: [DONE]\n\n"
    )
    assembler = StreamAssembler(CHAT, 1 << 20)
    assembler.feed(stream)
    document = assembler.document()
    assert document is not None
    assert {k: document[k] for k in ("id", "model", "created", "system_fingerprint")} == {
        "id": "chatcmpl-1", "model": "m", "created": 2, "system_fingerprint": "fp"}  # fmt: skip
    assert document["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "A"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "Bb"}, "finish_reason": "length"},
    ]
