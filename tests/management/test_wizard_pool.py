"""The import wizard with `backends` (issue #11): one backend per deployment, the pool, 429 breakers, the retry."""

import pytest

from apis.models import API
from backends.models import Backend
from gateway.contract import check_snapshot
from gateway_admin.snapshot import build_snapshot
from named_values.models import NamedValue
from tests.fixtures_procs import process_factory, start_mock_llm  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

URL = "/api/apis/import-language-model/"
AOAI = {
    "display_name": "Azure OpenAI",
    "path": "aoai",
    "type": "openai",
    "backends": [
        {
            "url": "https://ptu.example.com/openai",
            "priority": 1,
            "access_key": {"header_name": "api-key", "value": "ptu-secret"},
        },
        {
            "url": "https://paygo.example.com/openai",
            "priority": 2,
            "weight": 3,
            "access_key": {"header_name": "api-key", "value": "paygo-secret"},
        },
    ],
}


def test_backends_create_members_pool_breakers_and_the_routing_policy(api_client, settings):
    response = api_client.post(URL, AOAI, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert "ptu-secret" not in response.content.decode() and "paygo-secret" not in response.content.decode()
    assert body["backend"]["name"] == "azure-openai-backend" and body["backend"]["type"] == "Pool"
    assert body["backend"]["pool"] == {
        "services": [
            {"backend": "azure-openai-backend-1", "priority": 1, "weight": 1},
            {"backend": "azure-openai-backend-2", "priority": 2, "weight": 3},
        ]
    }
    members = {m["name"]: m for m in body["pool_members"]}
    assert members["azure-openai-backend-2"]["credentials_header"] == {"api-key": "{{azure-openai-key-2}}"}
    rule = members["azure-openai-backend-1"]["circuit_breaker"]["rules"][0]
    assert rule["failureCondition"]["statusCodeRanges"] == [{"min": 429, "max": 429}]
    assert rule["acceptRetryAfter"] is True and rule["tripDuration"] == "PT1M"
    assert NamedValue.objects.get(name="azure-openai-key-1").secret is True
    policy = body["policy"]["value"]
    assert '<set-backend-service backend-id="azure-openai-backend"/>' in policy
    assert (
        '<backend><retry condition="@(context.Response.StatusCode == 429 || context.Response.StatusCode == 503)" '
        'count="1" interval="0" first-fast-retry="true"><forward-request buffer-request-body="true"/></retry>'
        "</backend>"
    ) in policy
    token = settings.SLUICE["GATEWAY_TOKEN"]
    assert check_snapshot(build_snapshot(token), gateway_token=token) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": "https://x.example.com"}, "url"),
        ({"backends": []}, "backends"),
        ({"backends": [{"url": "ftp://x"}]}, "backends"),
        ({"backends": [{"url": "https://x.example.com", "weight": 500}]}, "backends"),
        ({"access_key": {"header_name": "api-key", "value": "k"}}, "access_key"),
        ({"name": "n" * 72}, "name"),
    ],
)
def test_bad_backends_are_400_naming_the_field_and_create_nothing(api_client, change, field):
    response = api_client.post(URL, {**AOAI, **change}, format="json")
    assert response.status_code in (400, 409), response.content
    assert field in response.json()
    assert not API.objects.exists() and not Backend.objects.exists() and not NamedValue.objects.exists()


def test_the_lab_end_to_end_ptu_first_then_pay_as_you_go_on_429(api_client, settings, process_factory):  # noqa: F811
    """The wizard's pool, published in a snapshot, served by a gateway in front of two real mock model processes."""
    import asyncio

    import aiohttp

    from gateway.app import create_app
    from gateway.http.server import ServerLimits, serve
    from gateway.settings import GatewaySettings
    from gateway.snapshot import load_snapshot
    from subscriptions.services import Scope, create_subscription

    ptu, paygo = (start_mock_llm(process_factory, name=name) for name in ("ptu", "paygo"))
    data = {**AOAI, "backends": [{**AOAI["backends"][0], "url": ptu.base_url},
                                 {**AOAI["backends"][1], "url": paygo.base_url}]}  # fmt: skip
    response = api_client.post(URL, data, format="json")
    assert response.status_code == 201, response.content
    key = "lab-key-" + "x" * 24
    create_subscription(name="lab", scope=Scope(api=API.objects.get()), primary_key=key, secondary_key=key[::-1])
    token = settings.SLUICE["GATEWAY_TOKEN"]
    snapshot = load_snapshot(build_snapshot(token), gateway_token=token)
    assert snapshot.quarantined == ()

    async def drive() -> list[int]:
        app = create_app(GatewaySettings(gateway_token=token))
        app.snapshot = snapshot
        server = await serve(app, "127.0.0.1", 0, limits=ServerLimits())
        port = server.sockets[0].getsockname()[1]
        statuses = []
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
                for index in range(6):
                    if index == 2:
                        ptu.fail("status", status=429, retry_after="60")
                    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
                    headers = {"Ocp-Apim-Subscription-Key": key}
                    async with session.post("/aoai/chat/completions", json=body, headers=headers) as answer:
                        await answer.read()
                        statuses.append(answer.status)
        finally:
            server.close()
            await app.aclose()
        return statuses

    assert asyncio.run(drive()) == [200] * 6
    ptu_stats, paygo_stats = ptu.stats(), paygo.stats()
    assert ptu_stats["requests"]["/chat/completions"] == 2 and ptu_stats["failures"] == {"status": 1}
    assert paygo_stats["requests"]["/chat/completions"] == 4  # the retried 429, then everything while tripped
    assert ptu_stats["last_request"]["headers"]["api-key"] == "ptu-secret"
    assert paygo_stats["last_request"]["headers"]["api-key"] == "paygo-secret"
