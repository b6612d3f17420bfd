"""Backends: CRUD, URL and credentials validation, references to named values, delete protection."""

import pytest

from backends.models import Backend
from policies.choices import PolicyScopeChoices
from policies.services import set_policy

from .crud import CRUDTests
from .factories import APIFactory, BackendFactory, NamedValueFactory

pytestmark = pytest.mark.django_db

URL = "/api/backends/"


class TestBackendCRUD(CRUDTests):
    base_url = URL
    model = Backend
    factory = BackendFactory
    create_data = {
        "name": "gemini-backend",
        "url": "https://generativelanguage.googleapis.com/v1beta/openai",
        "credentials_header": {"Authorization": "{{gemini-key}}"},
    }
    update_data = {"url": "http://ollama:11434/v1", "description": "local", "credentials_query": {"key": "{{q}}"}}
    patch_data = {"description": "patched"}

    def prepare(self):
        NamedValueFactory(name="gemini-key", secret=True)
        NamedValueFactory(name="q")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "b", "url": "ftp://example.com"}, "url"),
        ({"name": "b", "url": "https://"}, "url"),
        ({"name": "b", "url": "not a url"}, "url"),
        ({"name": "b", "url": "https://example.com:99999/"}, "url"),
        ({"name": "b", "url": "/relative"}, "url"),
        (
            {"name": "b", "url": "https://x.example.com", "credentials_header": {"bad header": "v"}},
            "credentials_header",
        ),
        ({"name": "b", "url": "https://x.example.com", "credentials_header": {"a": 1}}, "credentials_header"),
        ({"name": "b", "url": "https://x.example.com", "credentials_header": ["a"]}, "credentials_header"),
        ({"name": "b", "url": "https://x.example.com", "credentials_query": {"k": "{{missing}}"}}, "credentials_query"),
        ({"name": "-b", "url": "https://x.example.com"}, "name"),
    ],
)
def test_invalid_backend_is_400(api_client, data, field):
    response = api_client.post(URL, data)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Backend.objects.exists()


def test_unknown_named_value_is_named(api_client):
    response = api_client.post(
        URL, {"name": "b", "url": "https://x.example.com", "credentials_header": {"api-key": "{{nope}}"}}
    )
    assert response.status_code == 400
    assert "nope" in response.json()["credentials_header"][0]


def test_single_label_host_is_accepted(api_client):
    assert api_client.post(URL, {"name": "b", "url": "http://mockllm:8000/v1"}).status_code == 201


def test_backend_routed_to_by_a_policy_cannot_be_deleted(api_client):
    BackendFactory(name="llm")
    api = APIFactory(name="chat")
    set_policy(
        PolicyScopeChoices.API,
        api,
        '<policies><inbound><base/><set-backend-service backend-id="llm"/></inbound></policies>',
    )
    response = api_client.delete(f"{URL}llm/")
    assert response.status_code == 409
    assert "policy of API 'chat'" in response.json()["detail"]
    assert Backend.objects.filter(name="llm").exists()


#
# Pools and circuit breakers (issue #11)
#

RULE = {
    "name": "aoai-429",
    "failureCondition": {"count": 1, "interval": "PT1M", "statusCodeRanges": [{"min": 429, "max": 429}]},
    "tripDuration": "PT1M",
    "acceptRetryAfter": True,
}


def _pool(*members, **extra):
    return {
        "name": "aoai",
        "type": "Pool",
        "pool": {"services": [{"backend": m, "priority": i + 1, "weight": 1} for i, m in enumerate(members)]},
        **extra,
    }


def test_pool_with_breakers_is_created_and_snapshotted(api_client):
    from gateway_admin.snapshot import build_snapshot

    for name in ("ptu", "paygo"):
        response = api_client.post(
            URL, {"name": name, "url": f"https://{name}.example.com/openai", "circuit_breaker": {"rules": [RULE]}}
        )
        assert response.status_code == 201, response.content
    response = api_client.post(URL, _pool("ptu", "paygo"))
    assert response.status_code == 201, response.content
    assert response.json()["type"] == "Pool" and response.json()["url"] == ""
    backends = {b["name"]: b for b in build_snapshot()["backends"]}
    assert backends["aoai"]["pool_services"] == [
        {"backend": "ptu", "priority": 1, "weight": 1},
        {"backend": "paygo", "priority": 2, "weight": 1},
    ]
    assert backends["ptu"]["circuit_breaker"] == {
        "name": "aoai-429",
        "failure_count": 1,
        "failure_percentage": None,
        "interval_seconds": 60.0,
        "status_code_ranges": [[429, 429]],
        "error_reasons": [],
        "trip_duration_seconds": 60.0,
        "accept_retry_after": True,
    }


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (_pool(), ["pool", "services"]),
        (_pool("ghost"), ["pool", "services", "0", "backend"]),
        (_pool("a", "a"), ["pool", "services"]),
        (_pool(*[f"m{i}" for i in range(31)]), ["pool", "services"]),
        ({**_pool("a"), "url": "https://x.example.com"}, ["url"]),
        ({"name": "p", "type": "Pool"}, ["pool"]),
        ({"name": "s", "url": "https://x.example.com", "pool": {"services": [{"backend": "a"}]}}, ["pool"]),
        ({"name": "s", "type": "Cluster", "url": "https://x.example.com"}, ["type"]),
        (
            {"name": "p", "type": "Pool", "pool": {"services": [{"backend": "a", "weight": 101}]}},
            ["pool", "services", "0", "weight"],
        ),
        (
            {"name": "p", "type": "Pool", "pool": {"services": [{"backend": "a", "priority": -1}]}},
            ["pool", "services", "0", "priority"],
        ),
        (
            {
                "name": "s",
                "url": "https://x.example.com",
                "circuit_breaker": {"rules": [{**RULE, "tripDuration": "1m"}]},
            },
            ["circuit_breaker", "rules", "0", "tripDuration"],
        ),
        (
            {"name": "s", "url": "https://x.example.com", "circuit_breaker": {"rules": [RULE, RULE]}},
            ["circuit_breaker", "rules"],
        ),
        (
            {
                "name": "s",
                "url": "https://x.example.com",
                "circuit_breaker": {"rules": [{**RULE, "failureCondition": {"interval": "PT1M", "count": 1}}]},
            },
            ["circuit_breaker", "rules", "0", "failureCondition", "statusCodeRanges"],
        ),
        (
            {
                "name": "s",
                "url": "https://x.example.com",
                "circuit_breaker": {
                    "rules": [{**RULE, "failureCondition": {**RULE["failureCondition"], "percentage": 50}}]
                },
            },
            ["circuit_breaker", "rules", "0", "failureCondition", "count"],
        ),
        (
            {
                "name": "s",
                "url": "https://x.example.com",
                "circuit_breaker": {
                    "rules": [
                        {
                            **RULE,
                            "failureCondition": {
                                **RULE["failureCondition"],
                                "statusCodeRanges": [{"min": 100, "max": 99}],
                            },
                        }
                    ]
                },
            },
            ["circuit_breaker", "rules", "0", "failureCondition", "statusCodeRanges", "0", "min"],
        ),
    ],
)
def test_invalid_pool_or_breaker_is_400_naming_the_field(api_client, data, path):
    for name in [f"m{i}" for i in range(31)] + ["a"]:
        BackendFactory(name=name)
    before = Backend.objects.count()
    response = api_client.post(URL, data, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()
    for key in path:
        if isinstance(errors, list):
            errors = errors[int(key)]
        else:
            assert key in errors, (key, response.json())
            errors = errors[key]
    assert Backend.objects.count() == before


def test_a_pool_cannot_hold_a_pool_nor_become_one_while_a_member(api_client):
    BackendFactory(name="a")
    assert api_client.post(URL, _pool("a")).status_code == 201
    response = api_client.post(URL, {**_pool("aoai"), "name": "outer"}, format="json")
    assert response.status_code == 400
    assert "a pool cannot hold a pool" in response.json()["pool"]["services"]["0"]["backend"][0]
    response = api_client.patch(f"{URL}a/", {"type": "Pool", "url": "", "pool": {"services": [{"backend": "b"}]}})
    assert response.status_code == 400 and "type" in response.json()


def test_a_pool_member_cannot_be_deleted(api_client):
    BackendFactory(name="a")
    assert api_client.post(URL, _pool("a")).status_code == 201
    response = api_client.delete(f"{URL}a/")
    assert response.status_code == 409
    assert "pool 'aoai'" in response.json()["detail"]
    assert api_client.delete(f"{URL}aoai/").status_code == 204
    assert api_client.delete(f"{URL}a/").status_code == 204


def test_state_is_aggregated_from_gateway_heartbeats(api_client, gateway_client):
    for name in ("ptu", "paygo"):
        BackendFactory(name=name, circuit_breaker={"rules": [RULE]})
    assert api_client.post(URL, _pool("ptu", "paygo")).status_code == 201
    assert api_client.get(f"{URL}ptu/state/").json()["state"] == "unknown"  # no gateway reported yet
    beat = {"revision": 3, "status": "ok", "interval": 15}
    for gateway_id, ptu in (("gw-1", {"state": "open", "trips": 1, "open_until": 1_800_000_000}),
                            ("gw-2", {"state": "closed", "trips": 0})):  # fmt: skip
        data = {**beat, "gateway_id": gateway_id, "backends": {"ptu": ptu, "paygo": {"state": "closed"}}}
        assert gateway_client.post("/api/gateway/heartbeat/", data, format="json").status_code == 204
    state = api_client.get(f"{URL}ptu/state/").json()
    assert state["state"] == "open"  # the worst view wins
    assert sorted((g["gateway_id"], g["state"]) for g in state["gateways"]) == [("gw-1", "open"), ("gw-2", "closed")]
    pool = api_client.get(f"{URL}aoai/state/").json()
    assert pool["state"] == "degraded"
    assert [(m["backend"], m["state"], m["priority"]) for m in pool["members"]] == [
        ("ptu", "open", 1),
        ("paygo", "closed", 2),
    ]
