"""The built-in policies, one module each, registered from ``BUILTINS`` (docs/adding-a-policy.md).

``BUILTINS`` is the only list of them: ``gateway.policy`` builds the gateway's registry from it, and
tests/gateway/policy/test_registry.py holds it against the catalog, so a policy left out of it is a failing test.
"""

from __future__ import annotations

from typing import Final

from ..base import Base, Policy
from .check_header import CheckHeader
from .choose import Choose
from .forward_request import ForwardRequest
from .limit_concurrency import LimitConcurrency
from .llm_content_safety import LlmContentSafety
from .llm_emit_token_metric import AzureOpenAiEmitTokenMetric, LlmEmitTokenMetric
from .llm_semantic_cache_lookup import AzureOpenAiSemanticCacheLookup, LlmSemanticCacheLookup
from .llm_semantic_cache_store import AzureOpenAiSemanticCacheStore, LlmSemanticCacheStore
from .llm_token_limit import AzureOpenAiTokenLimit, LlmTokenLimit
from .quota_by_key import QuotaByKey
from .rate_limit_by_key import RateLimitByKey
from .retry import Retry
from .return_response import ReturnResponse
from .set_backend_service import SetBackendService
from .set_header import SetHeader
from .set_query_parameter import SetQueryParameter
from .set_status import SetStatus
from .set_variable import SetVariable

__all__ = ("BUILTINS",)

BUILTINS: Final[tuple[type[Policy], ...]] = (
    # document structure, control flow, variables
    Base,
    Choose,
    SetVariable,
    # requests and responses
    CheckHeader,
    SetHeader,
    SetQueryParameter,
    SetStatus,
    ReturnResponse,
    # routing
    SetBackendService,
    Retry,
    LimitConcurrency,
    ForwardRequest,
    # limits and metrics
    RateLimitByKey,
    QuotaByKey,
    LlmTokenLimit,
    AzureOpenAiTokenLimit,
    LlmEmitTokenMetric,
    AzureOpenAiEmitTokenMetric,
    # semantic cache
    LlmSemanticCacheLookup,
    AzureOpenAiSemanticCacheLookup,
    LlmSemanticCacheStore,
    AzureOpenAiSemanticCacheStore,
    # content safety
    LlmContentSafety,
)
