"""Gateway test helpers: snapshot dicts (APIs, operations, subscriptions, keys) for the gateway tests."""

from __future__ import annotations

import time
from typing import Any

from gateway.secrets import hash_key, sign_trace_token, snapshot_fernet, trace_key

TOKEN = "test-gateway-token"
KEYS = {
    "master": ("master-primary", "master-secondary"),
    "chat-only": ("chat-only-key", "chat-only-key-2"),
    "starter-sub": ("starter-key", "starter-key-2"),
    "hidden-sub": ("hidden-key", "hidden-key-2"),
    "suspended-sub": ("suspended-key", "suspended-key-2"),
    "other-api-sub": ("other-api-key", "other-api-key-2"),
}


def encrypt(value: str, token: str = TOKEN) -> str:
    return snapshot_fernet(token).encrypt(value.encode()).decode()


def trace_token(api: str, token: str = TOKEN, ttl: int = 120) -> bytes:
    """A debug-trace token for ``api``, as the management plane's test console signs one."""
    return sign_trace_token(trace_key(token), api, int(time.time()) + ttl).encode("ascii")


def subscription(name: str, scope: str, state: str = "active") -> dict[str, Any]:
    return {"name": name, "scope": scope, "state": state, "key_hashes": [hash_key(k) for k in KEYS[name]]}


def op(name: str, method: str, template: str, policy: str | None = None) -> dict[str, Any]:
    return {"name": name, "display_name": name, "method": method, "url_template": template, "policy": policy}


def api(name: str, path: str, service_url: str = "http://127.0.0.1:9/base", *, operations=None, **extra) -> dict:
    data = {
        "name": name,
        "path": path,
        "service_url": service_url,
        "api_type": "passthrough",
        "subscription_required": True,
        "subscription_key_header": "Ocp-Apim-Subscription-Key",
        "subscription_key_query": "subscription-key",
        "policy": None,
        "operations": operations
        if operations is not None
        else [op(f"any-{m.lower()}", m, "/*") for m in ("GET", "POST")],
    }
    data.update(extra)
    return data


def base_snapshot(upstream: str = "http://127.0.0.1:9/base") -> dict[str, Any]:
    """Several APIs, products and subscriptions covering the subscription decision table."""
    return {
        "version": 1,
        "revision": 7,
        "generated_at": "2026-11-25T18:00:00Z",
        "global_policy": None,
        "named_values": [
            {"name": "upstream-key", "secret": True, "value": None, "encrypted_value": encrypt("s3cret")},
            {"name": "region", "secret": False, "value": "eu", "encrypted_value": None},
        ],
        "backends": [
            {
                "name": "llm-backend",
                "url": upstream + "/v1",
                "credentials_header": {"Authorization": "Bearer {{upstream-key}}"},
                "credentials_query": {"region": "{{region}}"},
            }
        ],
        "products": [
            {
                "name": "starter",
                "state": "published",
                "subscription_required": True,
                "apis": ["chat", "other"],
                "policy": None,
            },
            {
                "name": "hidden",
                "state": "notPublished",
                "subscription_required": True,
                "apis": ["chat"],
                "policy": None,
            },
            {
                "name": "open",
                "state": "published",
                "subscription_required": False,
                "apis": ["open-api"],
                "policy": None,
            },
        ],
        "apis": [
            api(
                "chat",
                "llm/chat",
                upstream,
                operations=[
                    op("chat-completions", "POST", "/chat/completions"),
                    op("model", "GET", "/models/{model}"),
                    op("wild-get", "GET", "/*"),
                    op("wild-post", "POST", "/*"),
                ],
            ),
            api("other", "other", upstream),
            api("open-api", "open", upstream),
            api("free", "free", upstream, subscription_required=False),
        ],
        "subscriptions": [
            subscription("master", "/apis"),
            subscription("chat-only", "/apis/chat"),
            subscription("starter-sub", "/products/starter"),
            subscription("hidden-sub", "/products/hidden"),
            subscription("suspended-sub", "/apis", state="suspended"),
            subscription("other-api-sub", "/apis/other"),
        ],
    }


def llm_snapshot(base_url: str, policy: str) -> dict[str, Any]:
    """One OpenAI API, ``llm`` (``POST /llm/chat/completions`` to ``base_url``) with ``policy``; the ``master`` keys."""
    return {
        "version": 1,
        "revision": 1,
        "named_values": [],
        "backends": [],
        "products": [],
        "apis": [
            api(
                "llm",
                "llm",
                base_url,
                api_type="openai",
                policy=policy,
                operations=[op("chat-completions", "POST", "/chat/completions")],
            )
        ],
        "subscriptions": [subscription("master", "/apis")],
    }
