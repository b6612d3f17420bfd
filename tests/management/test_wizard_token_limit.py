"""The import wizard's `token_limit` block: it writes the matching llm-token-limit into the API policy."""

import pytest

from apis.models import API
from gateway.policy.builtin.llm_token_limit import LlmTokenLimit

from .wizard import BASE, URL, imported_policy_xml, only_step

pytestmark = pytest.mark.django_db


def imported_policy(api_client, token_limit):
    return imported_policy_xml(api_client, token_limit=token_limit)


def token_limit_of(policy_xml: str) -> LlmTokenLimit:
    return only_step(policy_xml, LlmTokenLimit)


def test_full_block_by_subscription(api_client):
    value = imported_policy(
        api_client,
        {
            "counter_key": "subscription",
            "tokens_per_minute": 5000,
            "token_quota": 100000,
            "token_quota_period": "Daily",
            "estimate_prompt_tokens": True,
        },
    )
    assert (
        '<inbound><base/><set-backend-service backend-id="gemini-backend"/>'
        "<llm-token-limit counter-key='@(context.Subscription?.Id ?? \"anonymous\")' "
        'tokens-per-minute="5000" token-quota="100000" token-quota-period="Daily" estimate-prompt-tokens="true"/>'
    ) in value
    step = token_limit_of(value)
    assert (step.tpm, step.quota, step.period, step.estimate) == (5000, 100000, "Daily", True)


def test_ip_key_and_tpm_only_with_estimation_off(api_client):
    value = imported_policy(api_client, {"counter_key": "ip", "tokens_per_minute": 60, "estimate_prompt_tokens": False})
    assert (
        '<llm-token-limit counter-key="@(context.Request.IpAddress)" tokens-per-minute="60" '
        'estimate-prompt-tokens="false"/>'
    ) in value
    step = token_limit_of(value)
    assert step.quota is None and step.estimate is False


def test_expression_key_and_quota_only_with_defaults(api_client):
    key = '@(context.Request.Headers.GetValueOrDefault("x-team", "none"))'
    value = imported_policy(api_client, {"counter_key": key, "token_quota": 1000, "token_quota_period": "Monthly"})
    step = token_limit_of(value)
    assert step.counter_key.source == key
    assert (step.tpm_value, step.quota, step.period, step.estimate) == (None, 1000, "Monthly", True)


def test_default_counter_key_is_the_subscription(api_client):
    step = token_limit_of(imported_policy(api_client, {"tokens_per_minute": 10}))
    assert step.counter_key.source == '@(context.Subscription?.Id ?? "anonymous")'


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({}, "tokens_per_minute"),
        ({"token_quota": 10}, "token_quota_period"),
        ({"token_quota_period": "Daily", "tokens_per_minute": 5}, "token_quota"),
        ({"tokens_per_minute": 0}, "tokens_per_minute"),
        ({"tokens_per_minute": 5, "token_quota": 10, "token_quota_period": "Fortnightly"}, "token_quota_period"),
        ({"tokens_per_minute": 5, "counter_key": "@(context.Nope)"}, "counter_key"),
        ({"tokens_per_minute": 5, "extra": 1}, "extra"),
    ],
)
def test_invalid_blocks_are_400(api_client, block, field):
    response = api_client.post(URL, {**BASE, "token_limit": block}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["token_limit"]
    assert not API.objects.exists()


def test_no_block_no_policy(api_client):
    response = api_client.post(URL, BASE, format="json")
    assert response.status_code == 201
    assert "llm-token-limit" not in response.json()["policy"]["value"]
