"""The test console in a real browser: a request sent through a running gateway process to the real mock model,
its answer streamed into the page, the pipeline trace, and the key's eye button (an audited reveal)."""

import json

from gateway_admin.models import ConfigRevision, GatewayHeartbeat, RevealRecord
from tests.gateway.gateway_proc import wait_for
from usage.models import UsageRollup

from .conftest import import_mock_api
from .test_browser import browser, page, pytestmark, shot  # noqa: F401  (fixtures and the module's marks)


def test_console_sends_through_the_gateway_and_shows_the_trace(page, live_server, mock_llm, gateway_for):  # noqa: F811
    import_mock_api(mock_llm)
    gateway_for(live_server.url)  # it reports its usage records to this management plane
    page.goto(f"{live_server.url}/ui/apis/chat/")
    page.get_by_role("link", name="Test console").click()
    page.get_by_role("heading", name="Test console chat").wait_for()
    key = page.get_by_label("Ocp-Apim-Subscription-Key")
    assert key.input_value() == "" and key.get_attribute("type") == "password"
    page.get_by_role("button", name="Show key").click()
    page.wait_for_function("document.getElementById('key').type === 'text'")
    assert key.input_value().strip() != ""
    assert RevealRecord.objects.filter(name="master", channel="console").count() == 1
    page.get_by_role("button", name="Send").click()
    page.locator("#response-status").get_by_text("200 OK").wait_for()
    page.get_by_text("Tokens: prompt").wait_for()
    rows = page.locator("#trace-rows tr")
    rows.first.wait_for()
    policies = rows.locator("td:nth-child(2)").all_inner_texts()
    assert policies[0] == "subscription-check" and "forward-request" in policies
    assert "key-matched: true" in rows.first.inner_text()
    shot(page, "console")

    # a streamed answer: the events appear in the body, and the usage of the last one is shown
    streamed = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
    page.get_by_label("Request body").fill(json.dumps(streamed))
    page.get_by_role("button", name="Send").click()
    page.locator("#response-body").get_by_text("data: [DONE]").wait_for()
    page.get_by_text("Tokens: prompt").wait_for()
    assert page.locator("#response-body").inner_text().count("data: ") > 2

    # the usage dashboard shows both requests, once the gateway has delivered their records
    assert wait_for(lambda: sum(UsageRollup.objects.filter(api="chat").values_list("requests", flat=True)) == 2)
    page.get_by_role("link", name="Usage").click()
    page.get_by_role("heading", name="Usage").wait_for()
    page.locator("#chart-tokens .main-svg").first.wait_for()  # drawn by plotly.js, served locally
    top = page.get_by_role("row", name="chat")
    assert top.locator("td").first.inner_text() == "2"
    shot(page, "usage")

    # the home page: the gateway seen through its heartbeat, serving the current revision, and the checklist done
    assert wait_for(lambda: GatewayHeartbeat.objects.filter(revision=ConfigRevision.current()).exists())
    page.get_by_role("link", name="Sluice", exact=True).click()
    page.get_by_role("heading", name="Gateways").wait_for()
    gateway = GatewayHeartbeat.objects.get()
    row = page.get_by_role("row", name=gateway.gateway_id)
    assert "ok" in row.inner_text() and "behind" not in row.inner_text()
    steps = page.locator(".checklist li").all_inner_texts()  # no subscription besides master yet
    assert [step.split(":")[0] for step in steps] == ["Done", "To do", "Done"]
    shot(page, "home")


def test_console_trace_shows_cache_safety_and_backend(page, live_server, mock_llm, gateway_for):  # noqa: F811
    """An API with the semantic cache and the built-in content safety: the trace's summary says hit or miss with
    the score, each safety verdict, and the backend that answered."""
    from apis.services import import_language_model
    from tests.management.factories import BackendFactory, BlocklistFactory

    import_mock_api(mock_llm, name="warmup", path="warmup/v1")  # the all-access subscription
    BackendFactory(name="embed", url=mock_llm.base_url)
    BlocklistFactory(name="words", items=[{"kind": "term", "value": "forbidden"}])
    import_language_model(
        {"display_name": "Cached", "name": "cached", "url": mock_llm.base_url, "path": "cached/v1", "type": "openai",
         "semantic_cache": {"embeddings_backend": "embed", "score_threshold": 0.05},
         "content_safety": {"backend": "builtin", "blocklists": ["words"]}}
    )  # fmt: skip
    gateway_for()
    page.goto(f"{live_server.url}/ui/apis/cached/console/")
    page.get_by_role("button", name="Show key").click()
    page.wait_for_function("document.getElementById('key').type === 'text'")
    summary = page.locator("#trace-summary")
    body = {"model": "m", "messages": [{"role": "user", "content": "tell me about rivers"}]}
    page.get_by_label("Request body").fill(json.dumps(body))
    page.get_by_role("button", name="Send").click()
    page.locator("#response-status").get_by_text("200 OK").wait_for()
    summary.get_by_text("Semantic cache: miss").wait_for()
    text = summary.inner_text()
    assert "Content safety, prompt: allowed by builtin" in text, text
    assert "Backend: cached-backend answered 200" in text, text

    page.get_by_role("button", name="Send").click()  # the same prompt again: from the cache
    summary.get_by_text("Semantic cache: hit (score").wait_for()
    assert "Backend:" not in summary.inner_text()
    shot(page, "console-trace-cache-hit")

    body["messages"][0]["content"] = "this is forbidden"
    page.get_by_label("Request body").fill(json.dumps(body))
    page.get_by_role("button", name="Send").click()
    summary.get_by_text("Content safety, prompt: blocked").wait_for()
    assert "Backend:" not in summary.inner_text()
    shot(page, "console-trace-blocked")
