"""The test console (Django test client): permissions, the relay's refusals, the audited key reveal, query counts,
and requests relayed through a real gateway process to the real mock model, with and without the trace."""

import json

import pytest
from django.urls import resolve, reverse

from gateway_admin.models import RevealRecord
from subscriptions.models import Subscription
from tests.management.factories import APIFactory, OperationFactory, SubscriptionFactory

from .conftest import import_mock_api, page_queries

pytestmark = pytest.mark.django_db


def url(page: str, api: str) -> str:
    return reverse(f"webui:{page}", kwargs={"name": api})


def send(client, api: str, **request):
    body = {"operation": "chat-completions", "subscription": "master", "trace": True, **request}
    return client.post(url("console-send", api), json.dumps(body), content_type="application/json")


def relayed(response) -> tuple[dict, bytes]:
    """The relay's answer: its JSON first line (status, headers, trace) and the gateway's body."""
    assert response.status_code == 200, response.content
    raw = b"".join(response.streaming_content)
    first, _, body = raw.partition(b"\n")
    return json.loads(first), body


def test_readers_cannot_use_the_console(reader_client):
    api = APIFactory()
    assert reader_client.get(url("console", api.name)).status_code == 403
    assert send(reader_client, api.name).status_code == 403
    assert reader_client.post(url("console-key", api.name), {"subscription": "master"}).status_code == 403


def test_console_page_lists_operations_and_the_subscriptions_of_the_api(operator_client):
    api = APIFactory()
    OperationFactory(api=api, name="chat", method="POST", url_template="/chat/completions")
    OperationFactory(api=api, name="model", method="GET", url_template="/models/{model}")
    SubscriptionFactory(name="elsewhere", api=APIFactory())
    page = operator_client.get(url("console", api.name))
    html = page.content.decode()
    assert page.status_code == 200
    assert "/chat/completions" in html and "/models/{model}" in html
    assert '<option value="master" selected>' in html and "elsewhere" not in html
    assert "&quot;messages&quot;" in html  # the sample chat request
    assert "Test console" in operator_client.get(reverse("webui:object-detail", args=["apis", api.name])).text
    get_page = operator_client.get(url("console", api.name), {"operation": "model"}).content.decode()
    assert 'data-param="model"' in get_page and 'id="body"' not in get_page


def test_showing_the_key_is_an_audited_reveal(operator_client, operator):
    api = APIFactory()
    master = Subscription.objects.get(name="master")  # the all-access subscription every install has
    answer = operator_client.post(url("console-key", api.name), {"subscription": "master"})
    assert answer.json() == {"subscription": "master", "key": master.primary_key}
    assert answer["Cache-Control"] == "no-store"
    record = RevealRecord.objects.get()
    assert (record.user, record.kind, record.name, record.channel) == (operator, "subscription", "master", "console")
    other = SubscriptionFactory(api=APIFactory())
    assert operator_client.post(url("console-key", api.name), {"subscription": other.name}).status_code == 404


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"operation": "nope"}, "has no operation 'nope'"),
        ({"headers": [["bad name", "x"]]}, "not a valid header name"),
        ({"headers": [["X-A", "a\r\nb"]]}, "line break"),
        ({"headers": [["Host", "evil"]]}, "sets the Host header itself"),
        ({"headers": [["x-sluice-trace", "forged"]]}, "sets the x-sluice-trace header itself"),
        ({"headers": "x"}, "list of [name, value] pairs"),
        ({"parameters": {"model": 1}}, "'parameters' must map names to strings"),
        ({"subscription": "nobody"}, "Pick a subscription"),
    ],
)
def test_relay_refuses_bad_requests_with_a_message(operator_client, request_, message):
    api = APIFactory()
    OperationFactory(api=api, name="chat-completions", url_template="/chat/completions")
    answer = send(operator_client, api.name, **request_)
    assert answer.status_code == 400
    assert message in answer.json()["detail"]


def test_relay_refuses_a_body_that_is_not_json(operator_client):
    api = APIFactory()
    answer = operator_client.post(url("console-send", api.name), "{", content_type="application/json")
    assert (answer.status_code, answer.json()) == (400, {"detail": "The request must be a JSON object."})


def test_relay_says_when_the_gateway_does_not_answer(operator_client, settings):
    from tests.fixtures_procs import free_port

    settings.SLUICE = {**settings.SLUICE, "GATEWAY_URL": f"http://127.0.0.1:{free_port()}"}
    api = APIFactory()
    OperationFactory(api=api, name="chat-completions", url_template="/chat/completions")
    answer = send(operator_client, api.name)
    assert answer.status_code == 502
    assert "did not answer" in answer.json()["detail"]


def test_send_through_a_real_gateway_with_the_trace(operator_client, gateway_for, mock_llm):
    import_mock_api(mock_llm)
    gateway_for()
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    meta, raw = relayed(
        send(operator_client, "chat", body=body, headers=[["Content-Type", "application/json"]], query=[["a", "1"]])
    )
    assert meta["status"] == 200
    assert meta["url"].endswith("/chat/v1/chat/completions?a=1")
    assert json.loads(raw)["usage"]["total_tokens"] > 0
    assert any(name.lower() == "x-request-id" for name, _ in meta["headers"])
    trace = meta["trace"]
    assert trace[0]["policy"] == "subscription-check" and trace[0]["subscription"] == "master"
    forward = next(entry for entry in trace if entry["policy"] == "forward-request")
    assert forward["status"] == 200 and forward["elapsed_ms"] >= 0
    # without the trace box: no trace; a streamed answer is relayed as it comes (server-sent events)
    streamed = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                           "stream_options": {"include_usage": True}})  # fmt: skip
    meta, raw = relayed(send(operator_client, "chat", body=streamed, trace=False))
    assert meta["status"] == 200 and meta["trace"] is None
    assert raw.count(b"data: ") > 2 and raw.rstrip().endswith(b"data: [DONE]")


def test_a_404_from_a_gateway_behind_says_it_has_not_loaded_the_change(operator_client, gateway_for, mock_llm):
    """Right after an import the gateway may not have polled the new revision: the console says so, not only
    "Unable to match incoming request to an operation"."""
    from gateway_admin.models import ConfigRevision

    import_mock_api(mock_llm)
    gateway_for()  # serves the snapshot of this moment, and never polls another one
    served = ConfigRevision.current()
    meta, _ = relayed(send(operator_client, "chat", body="{}", headers=[["Content-Type", "application/json"]]))
    assert meta["status"] != 404 and meta["note"] is None
    import_mock_api(mock_llm, name="fresh", path="fresh/v1")
    meta, raw = relayed(send(operator_client, "fresh", body="{}"))
    assert meta["status"] == 404 and b"Unable to match" in raw
    assert f"revision {served}; the current one is {ConfigRevision.current()}" in meta["note"]


def test_console_page_queries_do_not_grow(operator_client):
    api = APIFactory()
    OperationFactory(api=api)
    first = page_queries(operator_client, url("console", api.name))
    for _ in range(30):
        OperationFactory(api=api)
        SubscriptionFactory(api=api)
    assert page_queries(operator_client, url("console", api.name)) == first


def test_the_relay_runs_outside_the_request_transaction():
    # it waits on the gateway and the model: inside ATOMIC_REQUESTS it would hold SQLite's write lock meanwhile
    view = resolve(reverse("webui:console-send", args=["any"])).func
    assert "default" in getattr(view, "_non_atomic_requests", set())
