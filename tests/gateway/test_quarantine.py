"""Issue #7 item 1, load time: one bad item is quarantined, everything else in the snapshot still applies.

Before the fix a single bad row made the poller refuse the whole snapshot (and every later one) while
``/__sluice/health`` said ``ok``; a subscription created afterwards got 401 forever.
"""

from __future__ import annotations

import copy

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.app import HEALTH_PATH, create_app
from gateway.metrics import Metrics
from gateway.model import BackendTarget
from gateway.secrets import hash_key
from gateway.settings import GatewaySettings
from gateway.snapshot import check_snapshot, load_snapshot
from gateway.sync import SnapshotSync

from .fakes import FakePool, make_request
from .helpers import KEYS, TOKEN, api, base_snapshot, op
from .test_sync import cache_path, management  # noqa: F401  (fixtures)

AZURE_URL = "https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21"
UNAVAILABLE = {"statusCode": 503, "message": "The API is unavailable: the gateway could not load its configuration."}


def quarantined(data):
    return load_snapshot(data, gateway_token=TOKEN, quarantine=True)


def key_header(name="master"):
    return [(b"ocp-apim-subscription-key", KEYS[name][0].encode())]


def test_a_bad_backend_quarantines_it_and_its_dependants_only():
    data = base_snapshot()
    data["backends"].append({"name": "bad", "url": "http://h/x#frag", "credentials_header": {}})
    data["apis"].append(
        api(
            "uses-bad",
            "uses-bad",
            operations=[op("get", "GET", "/x")],
            policy="<policies><inbound><set-backend-service backend-id='bad'/></inbound></policies>",
        )
    )
    config = quarantined(data)
    kinds = {(p.kind, p.name) for p in config.quarantined}
    assert kinds == {("backend", "bad"), ("api", "uses-bad")}
    assert "bad" not in config.backends and "llm-backend" in config.backends
    assert config.apis["uses-bad"].unavailable and not config.apis["chat"].unavailable
    assert len(config.subscriptions) == 12  # nothing else lost


def test_newline_in_a_credential_header_quarantines_the_backend():
    data = base_snapshot()
    data["named_values"][0]["encrypted_value"] = None
    data["named_values"][0].update(secret=False, value="s3cret\n")
    config = quarantined(data)
    assert [(p.kind, p.name) for p in config.quarantined] == [("backend", "llm-backend")]
    assert "contains CR, LF or NUL" in config.quarantined[0].message


def test_a_quarantined_backend_url_is_never_reached_without_its_credentials():
    data = base_snapshot()
    data["backends"][0]["credentials_header"] = {"Authorization": "{{ghost}}"}
    data["apis"][0]["service_url"] = data["backends"][0]["url"]
    config = quarantined(data)
    assert config.apis["chat"].unavailable
    assert ("api", "chat") in {(p.kind, p.name) for p in config.quarantined}


@pytest.mark.parametrize(
    ("change", "kind", "name"),
    [
        (
            lambda d: d["products"][0].update(policy="<policies><inbound><x/></inbound></policies>"),
            "product",
            "starter",
        ),
        (lambda d: d["subscriptions"][0].update(scope="/apis/ghost"), "subscription", "master"),
        (lambda d: d["named_values"][1].update(value=None), "named_value", "region"),
        (lambda d: d["apis"].append(api("dup-path", "llm/chat")), "api", "dup-path"),
    ],
)
def test_each_kind_of_item_is_isolated(change, kind, name):
    data = copy.deepcopy(base_snapshot())
    change(data)
    config = quarantined(data)
    assert (kind, name) in {(p.kind, p.name) for p in config.quarantined}
    assert "other" in config.apis and not config.apis["other"].unavailable
    assert check_snapshot(data, gateway_token=TOKEN)  # the write-time check sees the same problems


def test_what_cannot_be_isolated_still_rejects_the_whole_snapshot():
    data = base_snapshot()
    data["global_policy"] = "<policies><inbound><nope/></inbound></policies>"
    problems = check_snapshot(data, gateway_token=TOKEN)
    assert [p.kind for p in problems] == ["snapshot"]
    assert check_snapshot(base_snapshot(), gateway_token=TOKEN) == []


async def test_unavailable_api_answers_503_and_the_rest_serves():
    data = base_snapshot()
    data["apis"][1]["policy"] = "<policies><inbound><unknown-policy/></inbound></policies>"  # API "other"
    app = create_app(GatewaySettings(gateway_token=TOKEN), pool=FakePool())
    app.snapshot = quarantined(data)
    broken = await app.handle(make_request("GET", "/other/x", headers=key_header()), b"r1")
    assert broken.status == 503 and orjson.loads(broken.body) == UNAVAILABLE
    fine = await app.handle(make_request("GET", "/llm/chat/models/m", headers=key_header()), b"r2")
    assert fine.status == 200


async def test_sync_applies_a_partly_bad_snapshot_and_health_tells(management, cache_path):  # noqa: F811
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    config = GatewaySettings(gateway_token=TOKEN, management_url=management.url, snapshot_cache=cache_path)
    sync = SnapshotSync(create_app(config, pool=FakePool(), metrics=metrics))
    try:
        await sync.poll_once()
        health = orjson.loads(sync.app._internal(HEALTH_PATH).body)
        assert health["status"] == "ok" and "quarantined" not in health
        # the reported trigger: a backend URL the loader refused, then a new subscription
        changed = copy.deepcopy(management.snapshot)
        changed["revision"] = 8
        changed["backends"].append({"name": "az", "url": "http://h/x#f", "credentials_header": {}})
        changed["subscriptions"].append(
            {"name": "late", "scope": "/apis", "state": "active", "key_hashes": [hash_key("late-key")]}
        )
        management.snapshot = changed
        assert await sync.poll_once() is True
        assert sync.app.snapshot.revision == 8
        assert hash_key("late-key") in sync.app.snapshot.subscriptions  # the later change applies
        health = orjson.loads(sync.app._internal(HEALTH_PATH).body)
        assert health["status"] == "degraded" and health["revision"] == 8
        assert health["quarantined"][0]["kind"] == "backend" and health["quarantined"][0]["name"] == "az"
        assert registry.get_sample_value("sluice_snapshot_quarantined_items") == 1
        # a snapshot that cannot be isolated is refused as a whole: health names it and the reason
        whole = copy.deepcopy(changed)
        whole["revision"] = 9
        whole["global_policy"] = "<policies><inbound><nope/></inbound></policies>"
        management.snapshot = whole
        assert await sync.poll_once() is False
        health = orjson.loads(sync.app._internal(HEALTH_PATH).body)
        assert health["status"] == "degraded" and health["revision"] == 8
        assert health["rejected"]["revision"] == 9 and "unknown policy <nope>" in health["rejected"]["reason"]
        assert registry.get_sample_value("sluice_snapshot_rejected_total") == 1
        fixed = copy.deepcopy(base_snapshot())
        fixed["revision"] = 10
        management.snapshot = fixed
        assert await sync.poll_once() is True
        health = orjson.loads(sync.app._internal(HEALTH_PATH).body)
        assert health["status"] == "ok" and health["revision"] == 10
        assert registry.get_sample_value("sluice_snapshot_quarantined_items") == 0
    finally:
        await sync.stop()


#
# Query strings in backend URLs (APIM: merged into every forwarded request, the client's value wins)
#


def test_backend_url_query_is_merged_and_the_client_wins():
    data = base_snapshot()
    data["backends"].append({"name": "az", "url": AZURE_URL, "credentials_header": {"api-key": "k"}})
    config = load_snapshot(data, gateway_token=TOKEN)
    target: BackendTarget = config.backends["az"]
    assert target.origin.host == "x.openai.azure.com" and target.base_path == "/openai/deployments/d"
    assert target.url_for("/chat/completions", "") == "/openai/deployments/d/chat/completions?api-version=2024-10-21"
    assert target.url_for("/c", "a=1") == "/openai/deployments/d/c?a=1&api-version=2024-10-21"
    assert target.url_for("/c", "api-version=2025-01-01") == "/openai/deployments/d/c?api-version=2025-01-01"
    assert target.url_for("/c", "api%2Dversion=x") == "/openai/deployments/d/c?api%2Dversion=x"


def test_set_backend_service_base_url_with_a_query():
    data = base_snapshot()
    data["apis"][1]["policy"] = (
        "<policies><inbound><set-backend-service base-url='http://h:1/p?v=1&amp;w=2'/></inbound></policies>"
    )
    config = load_snapshot(data, gateway_token=TOKEN)
    target = config.pipelines[config.apis["other"].operations[0]][None].inbound[0].target
    assert target.url_for("/x", "w=9") == "/p/x?w=9&v=1"
