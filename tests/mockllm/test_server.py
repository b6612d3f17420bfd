"""``python -m mockllm`` as a real process, checked with the official ``openai`` SDK and with raw HTTP."""

import http.client
import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from tests.fixtures_procs import MockLLM, start_mock_llm

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to me"}]
PROMPT_TOKENS = (3 + 2) + (3 + 4)
DEFAULT_TEXT = " ".join(f"word{i}" for i in range(16))


def call(url: str, method: str = "GET", body: bytes | str | None = None, headers: dict | None = None):
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def client(mock_llm: MockLLM) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.base_url, api_key="unused", max_retries=0)


#
# OpenAI SDK
#


def test_chat_completion(client):
    answer = client.chat.completions.create(model="my-model", messages=MESSAGES)
    assert answer.object == "chat.completion"
    assert answer.model == "my-model"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == DEFAULT_TEXT
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == PROMPT_TOKENS
    assert answer.usage.completion_tokens == 16
    assert answer.usage.total_tokens == PROMPT_TOKENS + 16


@pytest.mark.parametrize("cap", ["max_tokens", "max_completion_tokens"])
def test_chat_completion_cap(client, cap):
    answer = client.chat.completions.create(model="m", messages=MESSAGES, **{cap: 3})
    assert answer.choices[0].message.content == "word0 word1 word2"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3


def test_stream_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, max_tokens=4
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "word0 word1 word2 word3"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (PROMPT_TOKENS, 4)
    assert all(c.usage is None for c in chunks[:-1])
    # role chunk + 4 content chunks + finish chunk + usage chunk
    assert len(chunks) == 7


def test_stream_without_usage(client):
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True, max_tokens=2))
    assert len(chunks) == 4
    assert all(c.usage is None for c in chunks)


def test_embeddings_base64_and_float_agree(client):
    # the SDK asks for base64 by default and decodes it itself
    packed = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    floats = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"], encoding_format="float")
    assert [len(d.embedding) for d in packed.data] == [8, 8]
    assert packed.data[0].embedding == pytest.approx(floats.data[0].embedding)
    assert packed.data[0].embedding != packed.data[1].embedding
    assert floats.usage.prompt_tokens == 2


def test_embeddings_dimensions(client):
    answer = client.embeddings.create(model="e", input="hello", dimensions=32, encoding_format="float")
    assert len(answer.data[0].embedding) == 32


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert "mock" in ids
    assert client.models.retrieve("mock").id == "mock"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_completions(client):
    answer = client.completions.create(model="m", prompt="one two", max_tokens=2)
    assert answer.choices[0].text == "word0 word1"
    assert answer.usage.prompt_tokens == 2


def test_responses(client):
    answer = client.responses.create(model="m", input="hi there", max_output_tokens=3)
    assert answer.output_text == "word0 word1 word2"
    assert answer.usage.output_tokens == 3


def test_responses_stream(client):
    events = list(client.responses.create(model="m", input="hi", max_output_tokens=2, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "word0 word1"
    assert events[-1].type == "response.completed"


def test_root_base_url_without_v1(mock_llm):
    client = openai.OpenAI(base_url=mock_llm.root_url, api_key="unused", max_retries=0)
    assert client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1).choices[0].message.content


def test_bad_request_raises_in_sdk(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[])
    assert info.value.body["param"] == "messages"


#
# Raw HTTP
#


def test_malformed_json_is_openai_error(mock_llm):
    status, body = call(f"{mock_llm.base_url}/chat/completions", "POST", "{nope")
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_missing_messages(mock_llm):
    status, body = call(f"{mock_llm.root_url}/chat/completions", "POST", json.dumps({"model": "m"}))
    assert status == 400
    assert body["error"]["param"] == "messages"


def test_unknown_route_is_json_404(mock_llm):
    status, body = call(f"{mock_llm.base_url}/nothing-here")
    assert status == 404
    assert "nothing-here" in body["error"]["message"]


def test_forced_status(mock_llm):
    status, body = call(
        f"{mock_llm.base_url}/chat/completions", "POST", json.dumps({"messages": MESSAGES}), {"X-Mock-Status": "429"}
    )
    assert status == 429
    assert body["error"]["type"] == "rate_limit_error"


def test_delay_header(mock_llm):
    started = time.monotonic()
    call(
        f"{mock_llm.base_url}/chat/completions", "POST", json.dumps({"messages": MESSAGES}), {"X-Mock-Delay-Ms": "150"}
    )
    assert time.monotonic() - started >= 0.15


def test_echo_returns_what_arrived(mock_llm):
    status, body = call(
        f"{mock_llm.root_url}/echo/some/path?a=1&a=2&b=x",
        "PUT",
        b'{"k": 1}',
        {"X-Custom": "yes", "Content-Type": "application/json"},
    )
    assert status == 200
    assert body["method"] == "PUT"
    assert body["path"] == "/echo/some/path"
    assert body["query"] == "a=1&a=2&b=x"
    assert body["args"] == {"a": ["1", "2"], "b": ["x"]}
    assert body["headers"]["X-Custom"] == "yes"
    assert body["body"] == '{"k": 1}'
    assert body["json"] == {"k": 1}
    status, body = call(f"{mock_llm.base_url}/echo", "DELETE")
    assert (status, body["method"], body["path"]) == (200, "DELETE", "/v1/echo")


def test_stats_count_requests_and_remember_the_last_one(mock_llm):
    before = mock_llm.stats()
    call(f"{mock_llm.base_url}/models", headers={"X-Probe": "1"})
    after = mock_llm.stats()
    assert after["requests"]["/models"] == before["requests"].get("/models", 0) + 1
    assert after["last_request"]["headers"]["X-Probe"] == "1"


def test_client_disconnect_counts_a_cancelled_stream(mock_llm):
    before = mock_llm.stats()["streams_cancelled"]
    conn = http.client.HTTPConnection("127.0.0.1", mock_llm.port, timeout=10)
    body = json.dumps({"messages": MESSAGES, "stream": True})
    conn.request(
        "POST",
        "/v1/chat/completions",
        body,
        {"X-Mock-Chunk-Delay-Ms": "50", "X-Mock-Tokens": "100", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert response.read1(64).startswith(b"data: ")
    assert mock_llm.stats()["streams_in_flight"] >= 1
    conn.sock.close()
    conn.close()
    deadline = time.monotonic() + 5
    while mock_llm.stats()["streams_cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = mock_llm.stats()
    assert stats["streams_cancelled"] == before + 1
    assert stats["streams_in_flight"] == 0


#
# Command-line options (each test starts its own process)
#


def test_require_key(process_factory):
    mock = start_mock_llm(process_factory, "--require-key", "sk-test")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=mock.base_url, api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=mock.base_url, api_key="sk-test", max_retries=0)
    assert client.models.list().data
    assert call(f"{mock.root_url}/health")[0] == 200


def test_tokens_and_delay_options(process_factory):
    mock = start_mock_llm(process_factory, "--tokens", "3", "--delay-ms", "100", "--embed-dim", "4")
    client = openai.OpenAI(base_url=mock.base_url, api_key="unused", max_retries=0)
    started = time.monotonic()
    answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() - started >= 0.1
    assert answer.choices[0].message.content == "word0 word1 word2"
    assert len(client.embeddings.create(model="e", input="x").data[0].embedding) == 4


def test_sigterm_stops_the_server(process_factory):
    mock = start_mock_llm(process_factory)
    assert mock.process.stop(grace=5) is not None
    assert not mock.process.alive


#
# Azure OpenAI deployment routes
#


def test_azure_deployment_route_with_the_sdk(mock_llm):
    client = openai.AzureOpenAI(
        azure_endpoint=mock_llm.root_url, api_key="unused", api_version="2024-10-21", max_retries=0
    )
    answer = client.chat.completions.create(model="d", messages=MESSAGES)
    assert answer.choices[0].message.content == DEFAULT_TEXT
    assert mock_llm.stats()["last_request"]["query"] == "api-version=2024-10-21"


def test_azure_deployment_route_requires_api_version(mock_llm):
    body = json.dumps({"model": "d", "messages": MESSAGES})
    status, answer = call(f"{mock_llm.root_url}/openai/deployments/d/chat/completions", "POST", body)
    assert status == 400 and answer["error"]["param"] == "api-version"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/echo"])
def test_a_body_that_does_not_match_its_content_encoding_is_a_400(mock_llm: MockLLM, path):
    # found by the gateway fuzz battery: the mock answered aiohttp's plain-text 500 and the gateway relayed it
    status, body = call(
        mock_llm.base_url.removesuffix("/v1") + path,
        "POST",
        b'{"model": "gpt-4o-mini", "messages": []}',
        {"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert status == 400
    assert body["error"]["code"] == "invalid_request_body"
    assert "content-encoding: gzip" in body["error"]["message"]


#
# Failure modes (POST /mock/fail)
#


def test_failure_plan_status_with_retry_after_then_back_to_normal(mock_llm):
    chat = json.dumps({"messages": MESSAGES})
    mock_llm.reset()
    mock_llm.fail("status", count=2, status=429, retry_after="9")
    request = urllib.request.Request(f"{mock_llm.base_url}/chat/completions", data=chat.encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 429 and info.value.headers["Retry-After"] == "9"
    assert call(f"{mock_llm.base_url}/chat/completions", "POST", chat)[0] == 429
    assert call(f"{mock_llm.base_url}/chat/completions", "POST", chat)[0] == 200  # count used up
    stats = mock_llm.stats()
    assert stats["failures"] == {"status": 2} and stats["requests"]["/chat/completions"] == 1
    mock_llm.reset()
    assert mock_llm.stats()["failures"] == {}


def test_failure_plan_reset_drops_the_connection(mock_llm):
    mock_llm.reset()
    mock_llm.fail("reset", count=1)
    connection = http.client.HTTPConnection("127.0.0.1", mock_llm.port, timeout=10)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        connection.request("POST", "/v1/chat/completions", body=json.dumps({"messages": MESSAGES}))
        connection.getresponse()
    connection.close()
    assert mock_llm.stats()["failures"] == {"reset": 1}


@pytest.mark.parametrize(("body", "param"), [({"mode": "explode"}, "mode"), ({"mode": "status", "count": -1}, "count")])
def test_failure_plan_refuses_bad_input(mock_llm, body, param):
    status, answer = call(f"{mock_llm.root_url}/mock/fail", "POST", json.dumps(body))
    assert status == 400 and answer["error"]["param"] == param
