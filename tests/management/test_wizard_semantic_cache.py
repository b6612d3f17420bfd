"""The import wizard's `semantic_cache` block: the lookup (inbound) and store (outbound) policies it writes, the
local embeddings backend it creates or reuses, and 400s naming the field."""

import pytest
from django.conf import settings
from django.test import override_settings

from apis.models import API
from backends.models import Backend
from embeddings import DEFAULT_SCORE_THRESHOLD
from gateway.policy.builtin.llm_semantic_cache_lookup import LlmSemanticCacheLookup
from gateway.policy.builtin.llm_semantic_cache_store import LlmSemanticCacheStore

from .factories import BackendFactory
from .wizard import BASE, URL, imported_policy_xml, only_step

pytestmark = pytest.mark.django_db

LOCAL_URL = "http://127.0.0.1:18123/v1/embeddings"


def test_full_block_with_a_named_backend(api_client):
    BackendFactory(name="openai-embeddings", url="https://api.openai.com/v1/embeddings")
    block = {
        "embeddings_backend": "openai-embeddings",
        "score_threshold": 0.05,
        "duration": 3600,
        "vary_by": ["subscription", '@(context.Request.Headers.GetValueOrDefault("x-team", ""))'],
        "ignore_system_messages": True,
        "max_message_count": 10,
        "embeddings_model": "text-embedding-3-small",
    }
    xml = imported_policy_xml(api_client, semantic_cache=block)
    lookup = only_step(xml, LlmSemanticCacheLookup)
    assert lookup.threshold == 0.05 and lookup.backend_id == "openai-embeddings"
    assert lookup.max_messages == 10 and lookup.model == "text-embedding-3-small"
    assert lookup.ignore_system.literal == "true"
    assert [v.source for v in lookup.vary_by] == ['@(context.Subscription?.Id ?? "anonymous")', block["vary_by"][1]]
    assert lookup.section == "inbound"
    store = only_step(xml, LlmSemanticCacheStore)
    assert store.duration.literal == "3600" and store.section == "outbound"
    assert not Backend.objects.filter(name="local-embeddings").exists()


def test_a_similarity_like_threshold_is_accepted_as_written_and_only_the_gateway_warns(api_client, caplog):
    """APIM's lab value 0.8 is valid (0.0-1.0): the management plane stores it without a warning of its own (its
    write-time check runs the gateway's loader with warnings off); a gateway loading it logs one
    (tests/gateway/policy/builtin/test_llm_semantic_cache.py), and docs/semantic-cache.md says so."""
    BackendFactory(name="openai-embeddings", url="https://api.openai.com/v1/embeddings")
    block = {"embeddings_backend": "openai-embeddings", "score_threshold": 0.8}
    with caplog.at_level("WARNING"):
        xml = imported_policy_xml(api_client, semantic_cache=block)
    assert only_step(xml, LlmSemanticCacheLookup).threshold == 0.8
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []


@override_settings(SLUICE={**settings.SLUICE, "LOCAL_EMBEDDINGS_URL": LOCAL_URL})
def test_local_creates_the_embeddings_backend_once_from_the_settings(api_client):
    xml = imported_policy_xml(api_client, semantic_cache={"embeddings_backend": "local"})
    lookup = only_step(xml, LlmSemanticCacheLookup)
    assert lookup.backend_id == "local-embeddings"
    assert lookup.threshold == DEFAULT_SCORE_THRESHOLD
    assert [v.source for v in lookup.vary_by] == ['@(context.Subscription?.Id ?? "anonymous")']  # the default
    assert only_step(xml, LlmSemanticCacheStore).duration.literal == "3600"
    assert Backend.objects.get(name="local-embeddings").url == LOCAL_URL
    second = {**BASE, "display_name": "Second", "path": "second", "semantic_cache": {"embeddings_backend": "local"}}
    assert api_client.post(URL, second, format="json").status_code == 201
    assert Backend.objects.filter(name="local-embeddings").count() == 1  # reused


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({}, "embeddings_backend"),
        ({"embeddings_backend": "nope"}, "embeddings_backend"),
        ({"embeddings_backend": "local", "score_threshold": 1.5}, "score_threshold"),
        ({"embeddings_backend": "local", "score_threshold": "x"}, "score_threshold"),
        ({"embeddings_backend": "local", "duration": 0}, "duration"),
        ({"embeddings_backend": "local", "vary_by": ["tenant"]}, "vary_by"),
        ({"embeddings_backend": "local", "vary_by": ["@(context.Nope)"]}, "vary_by"),
        ({"embeddings_backend": "local", "vary_by": "subscription"}, "vary_by"),
        ({"embeddings_backend": "local", "max_message_count": 0}, "max_message_count"),
        ({"embeddings_backend": "local", "ignore_system_messages": "maybe"}, "ignore_system_messages"),
        ({"embeddings_backend": "local", "embeddings_model": "@(context.Api.Name)"}, "embeddings_model"),
        ({"embeddings_backend": "local", "extra": 1}, "extra"),
    ],
)
def test_invalid_blocks_are_400_naming_the_field(api_client, block, field):
    response = api_client.post(URL, {**BASE, "semantic_cache": block}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["semantic_cache"]
    assert not API.objects.exists()
    assert not Backend.objects.filter(name="local-embeddings").exists()
