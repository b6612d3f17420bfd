"""The semantic cache through a real gateway process, a real mock model (``python -m mockllm``) and real embeddings
backends: the mock model's own ``/embeddings`` (fast, equal texts give equal vectors), the local MiniLM engine
(``python -m embeddings``) and a closed port (down).

Every test uses prompts of its own (a fresh nonce), so entries of another test never answer it.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator

import openai
import orjson
import pytest

from tests.fixtures_embeddings import embeddings_server  # noqa: F401  (fixture)
from tests.fixtures_procs import MockLLM, _factory, _stop, free_port, start_mock_llm

from .gateway_proc import RunningGateway, Sidecar, sidecar, start_gateway, wait_for  # noqa: F401  (fixtures)
from .helpers import KEYS, api, op, subscription, trace_token
from .rawhttp import RawResponse, exchange, request_bytes

KEY = KEYS["master"][0]
OTHER_KEY = KEYS["chat-only"][0]
METRICS_TOKEN = "semantic-cache-metrics"
CHAT = [op("chat", "POST", "/chat/completions"), op("completions", "POST", "/completions")]


def lookup(backend: str, threshold: str = "0.05", extra: str = "") -> str:
    return (
        f'<llm-semantic-cache-lookup score-threshold="{threshold}" embeddings-backend-id="{backend}" '
        f'embeddings-backend-auth="system-assigned" ignore-system-messages="true" max-message-count="4" {extra}>'
        "<vary-by>@(context.Subscription.Id)</vary-by></llm-semantic-cache-lookup>"
    )


def document(backend: str, threshold: str = "0.05") -> str:
    return (
        f"<policies><inbound><base/>{lookup(backend, threshold)}</inbound>"
        '<outbound><base/><set-header name="x-before-store"><value>1</value></set-header>'
        '<llm-semantic-cache-store duration="60"/>'
        '<set-header name="x-after-store"><value>1</value></set-header></outbound></policies>'
    )


def snapshot(mock_root: str, embeddings_url: str, sidecar_url: str = "http://127.0.0.1:9") -> dict:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    local_policy = document("emb-local", "0.10")
    return {
        "version": 1,
        "revision": 1,
        "named_values": [],
        "backends": [
            # a full endpoint URL, as APIM's embeddings backends are configured, with a credential to send
            {"name": "emb-mock", "url": mock_root + "/v1/embeddings", "credentials_header": {"x-emb-key": "k1"}},
            {"name": "emb-local", "url": embeddings_url},  # a base URL: /embeddings is appended
            {"name": "emb-down", "url": dead},
            # answers a chat completion, not embeddings; keeps the headers it got
            {"name": "emb-wrong", "url": sidecar_url + "/lenient/v1", "credentials_header": {"api-key": "emb-secret"}},
        ],
        "products": [],
        "apis": [
            api("cached", "cached", mock_root + "/v1", api_type="openai", policy=document("emb-mock"), operations=CHAT),
            api("local", "local", mock_root + "/v1", api_type="openai", policy=local_policy, operations=CHAT),
            api("down", "down", mock_root + "/v1", api_type="openai", policy=document("emb-down"), operations=CHAT),
            api("wrong", "wrong", mock_root + "/v1", api_type="openai", policy=document("emb-wrong"), operations=CHAT),
        ],
        "subscriptions": [subscription("master", "/apis"), subscription("chat-only", "/apis")],
    }


@pytest.fixture(scope="module")
def mock_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockLLM]:
    """The mock model, also the "fast" embeddings backend, with 384-dimension vectors. With its default of 8, two
    unrelated prompts' hash vectors came closer than the 0.05 threshold now and then (a false hit at distance 0.024
    in one CI-like run): the cosine of two random unit vectors has a standard deviation of 1/sqrt(d), 0.35 at 8
    dimensions against 0.05 at 384, where a distance under 0.05 is out of reach."""
    start, started = _factory(tmp_path_factory.mktemp("mockllm-384"))
    yield start_mock_llm(start, "--embed-dim", "384")
    _stop(started)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mock_llm, embeddings_server, sidecar) -> Iterator[RunningGateway]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("semcache")
    start, started = _factory(tmp)
    env = {"SLUICE_METRICS_TOKEN": METRICS_TOKEN, "SLUICE_ADMIN_PORT": "0", "SLUICE_SEMANTIC_CACHE_TIMEOUT": "2"}
    try:
        data = snapshot(mock_llm.root_url, embeddings_server.base_url, sidecar.url)
        yield start_gateway(start, tmp, data, sidecar.url, env)
    finally:
        for process in reversed(started):
            process.stop()


def chat(
    port: int,
    path: str,
    text: str,
    *,
    key: str = KEY,
    stream: bool = False,
    usage: bool = False,
    headers: list[tuple[str, str]] | None = None,
    **extra: object,
) -> RawResponse:
    body: dict[str, object] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    sent = [("Content-Type", "application/json"), ("Ocp-Apim-Subscription-Key", key), *(headers or [])]
    response = exchange(port, request_bytes("POST", f"/{path}/chat/completions", sent, orjson.dumps(body)))
    assert response is not None
    return response


def model_calls(mock_llm) -> int:
    return int(mock_llm.stats()["requests"].get("/chat/completions", 0))


def metric(port: int, result: str, api_name: str) -> float:
    headers = [("Authorization", f"Bearer {METRICS_TOKEN}")]
    response = exchange(port, request_bytes("GET", "/__sluice/metrics", headers))
    assert response is not None and response.status == 200
    pattern = rf'sluice_semantic_cache_total\{{api="{api_name}",operation="chat",result="{result}"\}} (\S+)'
    found = re.search(pattern, response.body.decode())
    return float(found.group(1)) if found else 0.0


def events(body: bytes) -> list[str]:
    return [line[6:] for line in body.decode().split("\n\n") if line.startswith("data: ")]


def content_of(response: RawResponse) -> str:
    return orjson.loads(response.body)["choices"][0]["message"]["content"]


def stored(gateway: RunningGateway, count: float, api_name: str = "cached") -> bool:
    return metric(gateway.port, "stored", api_name) >= count


def test_a_miss_calls_the_model_and_an_equal_prompt_then_hits(gateway, mock_llm) -> None:
    text = f"What is the capital of France? {uuid.uuid4()}"
    before = model_calls(mock_llm)
    first = chat(gateway.port, "cached", text)
    assert first.status == 200, first.body
    assert first.header("x-semantic-cache") == "miss"
    assert first.header("x-before-store") == "1" and first.header("x-after-store") == "1"
    second = chat(gateway.port, "cached", text)
    assert second.status == 200
    assert second.header("x-semantic-cache") == "hit; score=0.0000"
    assert content_of(second) == content_of(first)
    assert model_calls(mock_llm) == before + 1  # the hit did not reach the model
    # each replay is a completion of its own: a fresh id (tied to its x-request-id), the stored content
    third = chat(gateway.port, "cached", text)
    ids = [orjson.loads(response.body)["id"] for response in (first, second, third)]
    assert len(set(ids)) == 3
    for response in (second, third):
        assert orjson.loads(response.body)["id"] == "chatcmpl-" + response.header("x-request-id").replace("-", "")
        assert orjson.loads(response.body)["choices"] == orjson.loads(first.body)["choices"]
    # the outbound steps up to and including the store were skipped, the ones after it ran
    assert second.header("x-before-store") is None and second.header("x-after-store") == "1"
    assert second.header("content-type") == "application/json"


def test_vary_by_keeps_subscriptions_apart(gateway, mock_llm) -> None:
    text = f"Tell me a fact about owls. {uuid.uuid4()}"
    assert chat(gateway.port, "cached", text).header("x-semantic-cache") == "miss"
    assert chat(gateway.port, "cached", text).header("x-semantic-cache").startswith("hit")
    before = model_calls(mock_llm)
    other = chat(gateway.port, "cached", text, key=OTHER_KEY)
    assert other.header("x-semantic-cache") == "miss"
    assert model_calls(mock_llm) == before + 1


def test_system_messages_are_ignored_and_long_dialogs_skip_the_cache(gateway) -> None:
    text = f"Name three rivers. {uuid.uuid4()}"
    assert chat(gateway.port, "cached", text).header("x-semantic-cache") == "miss"
    with_system = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": text}]
    hit = chat(gateway.port, "cached", "unused", messages=with_system)
    assert hit.header("x-semantic-cache").startswith("hit")
    long_dialog = [{"role": "user", "content": f"{text} {i}"} for i in range(5)]  # max-message-count="4"
    skipped = chat(gateway.port, "cached", "unused", messages=long_dialog)
    assert skipped.status == 200 and skipped.header("x-semantic-cache") is None


def test_a_streamed_request_that_hits_is_replayed_as_server_sent_events(gateway, mock_llm) -> None:
    text = f"Explain photosynthesis briefly. {uuid.uuid4()}"
    first = chat(gateway.port, "cached", text)
    assert first.header("x-semantic-cache") == "miss"
    before = model_calls(mock_llm)
    replay = chat(gateway.port, "cached", text, stream=True, usage=True)
    assert replay.status == 200
    assert replay.header("x-semantic-cache").startswith("hit")
    assert replay.header("content-type").startswith("text/event-stream")
    data = events(replay.body)
    assert data[-1] == "[DONE]"
    chunks = [orjson.loads(item) for item in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text_out = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text_out == content_of(first)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == orjson.loads(first.body)["usage"]
    # one fresh id for all the chunks of a replay, another for the next replay
    assert {c["id"] for c in chunks} == {"chatcmpl-" + replay.header("x-request-id").replace("-", "")}
    assert chunks[0]["id"] != orjson.loads(first.body)["id"]
    without_usage = chat(gateway.port, "cached", text, stream=True)
    assert {orjson.loads(item)["id"] for item in events(without_usage.body)[:-1]} == {
        "chatcmpl-" + without_usage.header("x-request-id").replace("-", "")
    }
    assert all("usage" not in orjson.loads(item) for item in events(without_usage.body)[:-1])
    assert model_calls(mock_llm) == before

    # the same replay read by the openai SDK
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{gateway.port}/cached",
        api_key="unused",
        default_headers={"Ocp-Apim-Subscription-Key": KEY},
        max_retries=0,
    )
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == content_of(first)


def test_a_streamed_answer_is_assembled_and_stored(gateway, mock_llm) -> None:
    text = f"Write a haiku about rain. {uuid.uuid4()}"
    stored_before = metric(gateway.port, "stored", "cached")
    streamed = chat(gateway.port, "cached", text, stream=True)
    assert streamed.header("x-semantic-cache") == "miss"
    deltas = [orjson.loads(item) for item in events(streamed.body)[:-1]]
    streamed_text = "".join(c["choices"][0]["delta"].get("content", "") for c in deltas if c["choices"])
    assert wait_for(lambda: stored(gateway, stored_before + 1))
    before = model_calls(mock_llm)
    hit = chat(gateway.port, "cached", text)
    assert hit.header("x-semantic-cache").startswith("hit")
    assert content_of(hit) == streamed_text
    # the gateway asked the model for the usage of the stream: the entry has it, the client did not see it
    assert orjson.loads(hit.body)["usage"]["completion_tokens"] > 0
    assert model_calls(mock_llm) == before


def test_a_cancelled_stream_is_not_stored(gateway, mock_llm) -> None:
    text = f"Count slowly to twenty. {uuid.uuid4()}"
    not_stored = metric(gateway.port, "not_stored", "cached")
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}], "stream": True})
    headers = [("Content-Type", "application/json"), ("Ocp-Apim-Subscription-Key", KEY),
               ("X-Mock-Chunk-Delay-Ms", "200"), ("X-Mock-Tokens", "40")]  # fmt: skip
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request_bytes("POST", "/cached/chat/completions", headers, body))
        received = b""
        while b"data: " not in received:  # the stream has begun (the head may come alone); then the client goes away
            chunk = sock.recv(65536)
            assert chunk, "the gateway closed before the stream began"
            received += chunk
    assert wait_for(lambda: metric(gateway.port, "not_stored", "cached") >= not_stored + 1)
    assert chat(gateway.port, "cached", text).header("x-semantic-cache") == "miss"


def test_an_error_is_not_stored(gateway) -> None:
    text = f"Trigger an error. {uuid.uuid4()}"
    failed = chat(gateway.port, "cached", text, headers=[("X-Mock-Status", "500")])
    assert failed.status == 500
    assert chat(gateway.port, "cached", text).header("x-semantic-cache") == "miss"


def test_the_embeddings_backend_down_falls_through_to_the_model(gateway, mock_llm) -> None:
    errors = metric(gateway.port, "lookup_error", "down")
    before = model_calls(mock_llm)
    text = f"Hello? {uuid.uuid4()}"
    for _ in range(2):
        response = chat(gateway.port, "down", text)
        assert response.status == 200 and content_of(response)
        assert response.header("x-semantic-cache") is None
    assert model_calls(mock_llm) == before + 2
    assert metric(gateway.port, "lookup_error", "down") == errors + 2
    log = gateway.log()
    assert log.count("semantic cache lookup failed for API down") == 1  # rate-limited


def test_the_backend_credentials_go_to_the_embeddings_backend_and_a_wrong_answer_falls_through(
    gateway,
    sidecar,  # noqa: F811
) -> None:
    text = f"Anyone there? {uuid.uuid4()}"
    response = chat(gateway.port, "wrong", text)
    assert response.status == 200 and content_of(response)
    assert response.header("x-semantic-cache") is None  # the lookup failed: no header, the model answered
    sent = [r for r in sidecar.backend_requests if r["path"] == "/lenient/v1/embeddings"]
    assert sent, "the embeddings backend was not called"
    assert sent[-1]["headers"].get("api-key") == "emb-secret"
    assert orjson.loads(sent[-1]["body"])["input"] == f"user: {text}"
    assert metric(gateway.port, "lookup_error", "wrong") >= 1


def test_legacy_completions_are_cached_and_replayed_as_their_stream(gateway, mock_llm) -> None:
    prompt = f"Once upon a time {uuid.uuid4()}"
    headers = [("Content-Type", "application/json"), ("Ocp-Apim-Subscription-Key", KEY)]

    def complete(**extra: object) -> RawResponse:
        body = orjson.dumps({"model": "gpt-3.5-turbo-instruct", "prompt": prompt, **extra})
        response = exchange(gateway.port, request_bytes("POST", "/cached/completions", headers, body))
        assert response is not None and response.status == 200, response
        return response

    first = complete()
    assert first.header("x-semantic-cache") == "miss"
    before = mock_llm.stats()["requests"].get("/completions", 0)
    replay = complete(stream=True)
    assert replay.header("x-semantic-cache").startswith("hit")
    chunks = [orjson.loads(item) for item in events(replay.body)[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == orjson.loads(first.body)["choices"][0]["text"]
    assert {c["id"] for c in chunks} == {"cmpl-" + replay.header("x-request-id").replace("-", "")}
    assert mock_llm.stats()["requests"].get("/completions", 0) == before


def test_a_hit_is_in_the_usage_record_and_the_trace(gateway, sidecar) -> None:  # noqa: F811
    text = f"Summarise the water cycle. {uuid.uuid4()}"
    first = chat(gateway.port, "cached", text)
    usage = orjson.loads(first.body)["usage"]
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
    headers = [("Content-Type", "application/json"), ("Ocp-Apim-Subscription-Key", KEY),
               ("x-sluice-trace", trace_token("cached").decode())]  # fmt: skip
    hit = exchange(gateway.port, request_bytes("POST", "/cached/chat/completions", headers, body))
    assert hit is not None and hit.header("x-semantic-cache").startswith("hit")
    trace = orjson.loads(hit.header("x-sluice-trace") or "[]")
    entry = next(e for e in trace if e.get("policy") == "llm-semantic-cache-lookup")
    assert entry["result"] == "hit" and entry["score"] == 0.0
    assert not any(e.get("policy") == "llm-semantic-cache-store" for e in trace)
    request_id = hit.header("x-request-id")
    records = wait_for(lambda: [r for r in sidecar.records if r["request_id"] == request_id])
    assert records, "no usage record for the hit"
    record = records[0]
    assert record["cache_hit"] is True
    assert record["prompt_tokens"] == usage["prompt_tokens"]
    assert record["completion_tokens"] == usage["completion_tokens"]
    assert record["backend"] is None


def test_the_local_engine_hits_a_paraphrase_and_misses_another_question(gateway, mock_llm) -> None:
    nonce = uuid.uuid4().hex[:6]
    first = chat(gateway.port, "local", f"How do I reset my password? Ticket {nonce}.")
    assert first.header("x-semantic-cache") == "miss"
    assert wait_for(lambda: stored(gateway, 1, "local"))
    paraphrase = chat(gateway.port, "local", f"How can I reset my password? Ticket {nonce}.")
    assert paraphrase.header("x-semantic-cache").startswith("hit; score=")
    score = float(paraphrase.header("x-semantic-cache").split("=")[1])
    assert 0.0 < score <= 0.10
    unrelated = chat(gateway.port, "local", f"What is the boiling point of water? Ticket {nonce}.")
    assert unrelated.header("x-semantic-cache") == "miss"


def test_replicas_share_the_redis_store(tmp_path, mock_llm, embeddings_server) -> None:  # noqa: F811
    import os

    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:
        pytest.skip("REDIS_URL is not set")
    start, started = _factory(tmp_path)
    env = {"REDIS_URL": redis_url, "SLUICE_ADMIN_PORT": "0"}
    try:
        data = snapshot(mock_llm.root_url, embeddings_server.base_url)
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        first = start_gateway(start, tmp_path / "a", data, None, env)
        second = start_gateway(start, tmp_path / "b", data, None, env)
        text = f"Which planet is largest? {uuid.uuid4()}"
        stored_answer = chat(first.port, "cached", text)
        assert stored_answer.header("x-semantic-cache") == "miss"
        hit = chat(second.port, "cached", text)  # the other replica answers from what the first one stored
        assert hit.header("x-semantic-cache") == "hit; score=0.0000"
        assert content_of(hit) == content_of(stored_answer)
        assert chat(second.port, "cached", text, key=OTHER_KEY).header("x-semantic-cache") == "miss"
    finally:
        for process in reversed(started):
            process.stop()
