"""A gateway with an Azure-OpenAI-shaped API for the policy-language tests (no sockets, injected clocks).

API ``aoai`` at ``/aoai`` with ``POST /deployments/{deployment-id}/chat/completions`` and ``GET /models``, backends
``openai-backend`` and ``premium-backend``; documents may be given in ``rawxml`` (``raw=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from gateway.app import TRACE_HEADER, create_app
from gateway.limits import create_store
from gateway.policy import SECTION_ORDER, Policy, rawxml_to_xml
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot

from ..fakes import FakePool, FakeUpstream, header, make_request
from ..helpers import KEYS, TOKEN, api, base_snapshot, op, trace_token

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "policies"
KEY = (b"ocp-apim-subscription-key", KEYS["master"][0].encode())
UPSTREAM = "http://127.0.0.1:9"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


# The smallest valid statement of each built-in policy (docs/adding-a-policy.md: a new policy adds its line).
EXAMPLES = {
    "base": "<base />",
    "check-header": '<check-header name="x-a" failed-check-httpcode="401" failed-check-error-message="no" '
    'ignore-case="true" />',
    "choose": '<choose><when condition="true" /></choose>',
    "set-variable": '<set-variable name="v" value="1" />',
    "set-header": '<set-header name="x-a" exists-action="delete" />',
    "set-query-parameter": '<set-query-parameter name="a" exists-action="delete" />',
    "set-status": '<set-status code="200" />',
    "return-response": "<return-response />",
    "set-backend-service": '<set-backend-service base-url="http://127.0.0.1:9" />',
    "forward-request": "<forward-request />",
    "retry": '<retry condition="@(false)" count="2" interval="0"><set-variable name="x" value="1" /></retry>',
    "limit-concurrency": '<limit-concurrency key="k" max-count="2"><set-variable name="x" value="1" />'
    "</limit-concurrency>",
    "rate-limit-by-key": '<rate-limit-by-key calls="1" renewal-period="1" counter-key="k" />',
    "quota-by-key": '<quota-by-key calls="1" renewal-period="300" counter-key="k" />',
    "llm-token-limit": '<llm-token-limit counter-key="k" tokens-per-minute="60" estimate-prompt-tokens="false" />',
    "llm-content-safety": '<llm-content-safety backend-id="builtin" />',
    "llm-emit-token-metric": '<llm-emit-token-metric><dimension name="API ID" /></llm-emit-token-metric>',
    "llm-semantic-cache-lookup": '<llm-semantic-cache-lookup score-threshold="0.05" embeddings-backend-id="emb" '
    'embeddings-backend-auth="system-assigned"><vary-by>@(context.Subscription.Id)</vary-by>'
    "</llm-semantic-cache-lookup>",
    "llm-semantic-cache-store": '<llm-semantic-cache-store duration="60" />',
}
# an APIM alias is written like the policy it renames
EXAMPLES["azure-openai-token-limit"] = EXAMPLES["llm-token-limit"].replace("llm-", "azure-openai-")
EXAMPLES["azure-openai-emit-token-metric"] = EXAMPLES["llm-emit-token-metric"].replace("llm-", "azure-openai-")
for _name in ("llm-semantic-cache-lookup", "llm-semantic-cache-store"):
    EXAMPLES[_name.replace("llm-", "azure-openai-")] = EXAMPLES[_name].replace("llm-", "azure-openai-")


def usage_document(cls: type[Policy]) -> str:
    """A document holding the example statement of ``cls`` (line 3) in the first section it may appear in."""
    section = next(s for s in SECTION_ORDER if s in cls.sections).value
    return f"<policies>\n  <{section}>\n    {EXAMPLES[cls.name]}\n  </{section}>\n</policies>"


def fixture(name: str) -> str:
    """A fixture document as stored (``xml``): ``*.raw.xml`` files are converted from rawxml."""
    text = (FIXTURES / name).read_text()
    return rawxml_to_xml(text) if name.endswith(".raw.xml") else text


class Clock:
    """Epoch seconds that tests move by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def snapshot(*, api_policy=None, op_policy=None, product_policy=None, global_policy=None, raw=False) -> dict:
    convert = rawxml_to_xml if raw else (lambda text: text)
    data = base_snapshot(UPSTREAM)
    data["global_policy"] = convert(global_policy) if global_policy else None
    data["backends"] += [
        {"name": "openai-backend", "url": UPSTREAM + "/openai", "credentials_header": {"api-key": "k1"}},
        {"name": "premium-backend", "url": UPSTREAM + "/premium", "credentials_header": {"api-key": "k2"}},
    ]
    operations = [
        op("chat", "POST", "/deployments/{deployment-id}/chat/completions", convert(op_policy) if op_policy else None),
        op("models", "GET", "/models"),
    ]
    data["apis"].append(
        api(
            "aoai",
            "aoai",
            UPSTREAM + "/base",
            operations=operations,
            policy=convert(api_policy) if api_policy else None,
        )
    )
    data["products"].append(
        {
            "name": "gold",
            "state": "published",
            "subscription_required": True,
            "apis": ["aoai"],
            "policy": convert(product_policy) if product_policy else None,
        }
    )
    return data


class Gateway:
    """The app, its fake upstream pool and its clock."""

    def __init__(self, data: dict, respond=None, metrics=None, *, clock=None, store=None, sleep=None) -> None:
        self.clock = clock or Clock()
        self.pool = FakePool(respond=respond)
        self.store = store or create_store("memory", clock=self.clock)
        extra = {"sleep": sleep} if sleep is not None else {}
        self.app = create_app(
            GatewaySettings(gateway_token=TOKEN), pool=self.pool, token_store=self.store, metrics=metrics, **extra
        )
        self.app.snapshot = load_snapshot(data, gateway_token=TOKEN)

    async def chat(self, deployment="gpt-4o", *, headers=(), query="", body=b"{}", client_ip="10.0.0.1", trace=False):
        extra = [(TRACE_HEADER, trace_token("aoai"))] if trace else []
        request = make_request(
            "POST", f"/aoai/deployments/{deployment}/chat/completions", query, [KEY, *headers, *extra], body, client_ip
        )
        return await self.app(request)

    @property
    def last_call(self):
        return self.pool.calls[-1]


def gateway(
    respond=None, *, api_type: str = "passthrough", metrics=None, clock=None, store=None, sleep=None, **policies: Any
) -> Gateway:
    data = snapshot(**policies)
    data["apis"][-1]["api_type"] = api_type
    return Gateway(data, respond, metrics, clock=clock, store=store, sleep=sleep)


def upstream(status=200, body=b'{"ok": true}', headers=None):
    """A respond function for FakePool answering ``status`` with a JSON body."""
    return lambda call: FakeUpstream(status=status, body=body, headers=headers)


def trace_of(response) -> list[dict]:
    """The policies' trace entries (without the subscription check's, which comes first)."""
    trace = orjson.loads(header(response, TRACE_HEADER))
    assert trace[0]["policy"] == "subscription-check"
    return trace[1:]


__all__ = ("FIXTURES", "KEY", "START", "Clock", "Gateway", "fixture", "gateway", "header", "trace_of", "upstream")
