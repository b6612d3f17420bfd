"""The import wizard's `token_metrics` block: it writes the matching llm-emit-token-metric into the API policy."""

import pytest

from apis.models import API
from gateway.policy.builtin.llm_emit_token_metric import BUILT_IN_DIMENSIONS, LlmEmitTokenMetric

from .wizard import BASE, URL, imported_policy_xml, only_step

pytestmark = pytest.mark.django_db


def imported_policy(api_client, token_metrics, **extra):
    return imported_policy_xml(api_client, token_metrics=token_metrics, **extra)


def metric_step(policy_xml: str) -> LlmEmitTokenMetric:
    return only_step(policy_xml, LlmEmitTokenMetric)


def test_namespace_and_dimensions_in_the_inbound_section(api_client):
    value = imported_policy(api_client, {"namespace": "Gemini usage", "dimensions": ["API ID", "Subscription ID"]})
    assert (
        '<inbound><base/><set-backend-service backend-id="gemini-backend"/>'
        '<llm-emit-token-metric namespace="Gemini usage"><dimension name="API ID"/>'
        '<dimension name="Subscription ID"/></llm-emit-token-metric></inbound>'
    ) in value
    step = metric_step(value)
    assert step.prefix == "gemini_usage"
    assert step.label_names == ("api_id", "subscription_id")
    assert step.section is not None and step.section.value == "inbound"


def test_default_namespace_is_left_to_the_policy(api_client):
    value = imported_policy(api_client, {"dimensions": ["Operation ID"]})
    assert '<llm-emit-token-metric><dimension name="Operation ID"/></llm-emit-token-metric>' in value
    assert metric_step(value).namespace == "API Management"


def test_every_built_in_dimension(api_client):
    names = list(BUILT_IN_DIMENSIONS)
    assert len(names) == 8
    step = metric_step(imported_policy(api_client, {"dimensions": names}))
    assert len(step.label_names) == 8


def test_namespace_with_xml_characters_is_escaped(api_client):
    value = imported_policy(api_client, {"namespace": 'A & "B" <c>', "dimensions": ["API ID"]})
    assert metric_step(value).namespace == 'A & "B" <c>'


def test_passthrough_api(api_client):
    value = imported_policy(
        api_client, {"dimensions": ["API ID"]}, type="passthrough", display_name="Bedrock", path="bedrock"
    )
    assert metric_step(value).label_names == ("api_id",)


def test_without_the_block_there_is_no_metric(api_client):
    response = api_client.post(URL, BASE, format="json")
    assert response.status_code == 201
    assert "llm-emit-token-metric" not in response.json()["policy"]["value"]


def test_null_block_is_no_metric(api_client):
    response = api_client.post(URL, {**BASE, "token_metrics": None}, format="json")
    assert response.status_code == 201
    assert "llm-emit-token-metric" not in response.json()["policy"]["value"]


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"dimensions": ["Client IP"]}, "dimensions"),
        ({"dimensions": ["api id"]}, "dimensions"),
        ({"dimensions": []}, "dimensions"),
        ({"dimensions": "API ID"}, "dimensions"),
        ({"dimensions": ["API ID", "API ID"]}, "dimensions"),
        ({}, "dimensions"),
        ({"namespace": "---", "dimensions": ["API ID"]}, "namespace"),
        ({"namespace": "@(context.Api.Name)", "dimensions": ["API ID"]}, "namespace"),
        ({"namespace": "", "dimensions": ["API ID"]}, "namespace"),
        ({"dimensions": ["API ID"], "colour": "red"}, "colour"),
    ],
)
def test_invalid_block_is_400_naming_the_field(api_client, block, field):
    response = api_client.post(URL, {**BASE, "token_metrics": block}, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()["token_metrics"]
    assert field in errors
    assert not API.objects.exists()


def test_invalid_dimension_is_named_by_its_position(api_client):
    response = api_client.post(URL, {**BASE, "token_metrics": {"dimensions": ["API ID", "Client IP"]}}, format="json")
    assert response.status_code == 400
    detail = response.json()["token_metrics"]["dimensions"]
    assert "1" in detail and "Client IP" in str(detail["1"])
