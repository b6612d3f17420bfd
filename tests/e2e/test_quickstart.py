"""The walking skeleton, end to end, as a new user drives it (issue #2).

Everything goes through real processes and sockets: the management plane is pytest-django's live server (on the
test database: SQLite locally, PostgreSQL in CI), the gateway is ``python -m gateway`` pulling its snapshot over
HTTP, and the model is the project's mock server. Configuration is made through REST only, and the model is called
through the gateway with the official ``openai`` SDK.
"""

import json
from pathlib import Path

import openai
import pytest
import requests
from rest_framework.authtoken.models import Token

from tests.fixtures_procs import start_mock_llm

from .helpers import PROPAGATION_DEADLINE, Sluice, start_sluice, subscribe

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND_KEY = "sk-backend-secret-0123456789"


@pytest.fixture
def sluice(live_server, admin_user, settings, process_factory, tmp_path) -> Sluice:
    token = Token.objects.create(user=admin_user).key
    return start_sluice(process_factory, tmp_path, live_server.url, token, settings.SLUICE["GATEWAY_TOKEN"])


@pytest.fixture
def model(process_factory):
    """The mock model, refusing any call without the backend key that the import wizard stores."""
    return start_mock_llm(process_factory, "--require-key", BACKEND_KEY, name="model")


def import_openai_api(sluice: Sluice, model, name: str = "chat") -> dict:
    response = sluice.post(
        "apis/import-language-model/",
        {
            "display_name": "Chat model",
            "name": name,
            "url": model.base_url,
            "path": f"{name}/v1",
            "type": "openai",
            "access_key": {"header_name": "Authorization", "value": f"Bearer {BACKEND_KEY}"},
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_import_subscribe_and_call_with_the_openai_sdk(sluice, model):
    imported = import_openai_api(sluice, model)
    assert "value" not in json.dumps(imported["named_value"]) or imported["named_value"].get("value") is None
    key = subscribe(sluice, "team-a", "/apis/chat")
    sluice.wait_for_gateway()

    client = openai.OpenAI(
        base_url=f"{sluice.gateway_url}/chat/v1",
        api_key="unused-by-the-gateway",
        default_headers={"Ocp-Apim-Subscription-Key": key},
        max_retries=0,
    )
    completion = client.chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "Say hello"}], max_tokens=5
    )
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens == 5

    stream = client.chat.completions.create(
        model="mock",
        messages=[{"role": "user", "content": "Count to four"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert text
    assert len(usage) == 1
    assert usage[0].completion_tokens == 4

    # the backend saw its own key, never the subscription key
    last = model.stats()["last_request"]
    headers = {k.lower(): v for k, v in last["headers"].items()}
    assert headers["authorization"] == f"Bearer {BACKEND_KEY}"
    assert "ocp-apim-subscription-key" not in headers


def test_missing_and_wrong_keys_get_the_apim_401_bodies(sluice, model):
    import_openai_api(sluice, model)
    sluice.wait_for_gateway()
    url = f"{sluice.gateway_url}/chat/v1/chat/completions"
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}

    missing = requests.post(url, json=body, timeout=10)
    assert missing.status_code == 401
    assert missing.json() == {
        "statusCode": 401,
        "message": "Access denied due to missing subscription key. "
        "Make sure to include subscription key when making requests to an API.",
    }
    wrong = requests.post(url, json=body, headers={"Ocp-Apim-Subscription-Key": "not-a-key"}, timeout=10)
    assert wrong.status_code == 401
    assert wrong.json() == {
        "statusCode": 401,
        "message": "Access denied due to invalid subscription key. "
        "Make sure to provide a valid key for an active subscription.",
    }
    assert wrong.headers["x-request-id"]

    client = openai.OpenAI(base_url=f"{sluice.gateway_url}/chat/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 401


def test_passthrough_forwards_any_verb_and_sub_path(sluice, model):
    response = sluice.post(
        "apis/import-language-model/",
        {"display_name": "Raw", "url": model.root_url, "path": "raw", "type": "passthrough"},
    )
    assert response.status_code == 201, response.text
    assert sorted(op["method"] for op in response.json()["operations"]) == sorted(
        ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]
    )
    key = subscribe(sluice, "raw-user", "/apis/raw")
    sluice.wait_for_gateway()

    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        echoed = requests.request(
            method,
            f"{sluice.gateway_url}/raw/echo/a/b?x=1&subscription-key={key}&y=2",
            data=b'{"n": 1}' if method in ("POST", "PUT", "PATCH") else None,
            headers={"X-Custom": "kept", "Authorization": f"Bearer {BACKEND_KEY}"},
            timeout=10,
        )
        assert echoed.status_code == 200, (method, echoed.text)
        seen = echoed.json()
        assert seen["method"] == method
        assert seen["path"] == "/echo/a/b"
        assert seen["query"] == "x=1&y=2"  # the key parameter is stripped, the rest kept in order
        assert {k.lower(): v for k, v in seen["headers"].items()}["x-custom"] == "kept"

    head = requests.head(
        f"{sluice.gateway_url}/raw/echo/head?subscription-key={key}",
        headers={"Authorization": f"Bearer {BACKEND_KEY}"},
        timeout=10,
    )
    assert head.status_code == 200
    assert head.content == b""


def test_rest_changes_reach_the_gateway_within_two_seconds(sluice, model):
    import_openai_api(sluice, model)
    key = subscribe(sluice, "short-lived", "/apis/chat")
    sluice.wait_for_gateway()
    url = f"{sluice.gateway_url}/chat/v1/models"
    assert requests.get(url, headers={"Ocp-Apim-Subscription-Key": key}, timeout=10).status_code in (200, 404)

    assert sluice.patch("subscriptions/short-lived/", {"state": "suspended"}).status_code == 200
    waited = sluice.wait_for_gateway()
    assert waited <= PROPAGATION_DEADLINE
    refused = requests.post(
        f"{sluice.gateway_url}/chat/v1/chat/completions",
        json={"model": "mock", "messages": []},
        headers={"Ocp-Apim-Subscription-Key": key},
        timeout=10,
    )
    assert refused.status_code == 401
    assert "invalid subscription key" in refused.json()["message"]


def test_secrets_stay_out_of_responses_snapshot_file_and_logs(sluice, model):
    imported = import_openai_api(sluice, model)
    assert imported["named_value"]["name"] == "chat-key"
    sluice.wait_for_gateway()

    listed = sluice.session.get(f"{sluice.management_url}/api/named-values/", timeout=10).text
    detail = sluice.session.get(f"{sluice.management_url}/api/named-values/chat-key/", timeout=10).text
    snapshot_file = Path(sluice.snapshot_path).read_text()
    gateway_log = sluice.gateway_process.tail(10_000)
    for text in (json.dumps(imported), listed, detail, snapshot_file, gateway_log):
        assert BACKEND_KEY not in text

    revealed = sluice.post("named-values/chat-key/list-value/")
    assert revealed.json() == {"value": f"Bearer {BACKEND_KEY}"}
