"""factory_boy factories for usage records (the gateway's dataclass) and rollup rows."""

import time
import uuid
from datetime import UTC, datetime

import factory
from factory.django import DjangoModelFactory

from gateway.usage.record import UsageRecord
from usage.models import UsageRollup

__all__ = ("BASE", "BASE_MS", "UsageRecordFactory", "UsageRollupFactory", "at")

# The start of the previous hour: recent enough for the dedupe window, far enough from any minute boundary that
# records placed at BASE + n seconds stay in the minute the test expects.
BASE_MS = (int(time.time()) // 3600 - 1) * 3600 * 1000
BASE = datetime.fromtimestamp(BASE_MS / 1000, tz=UTC)


def at(minutes: float = 0, seconds: float = 0) -> int:
    """Epoch milliseconds, `minutes` and `seconds` after BASE."""
    return BASE_MS + int((minutes * 60 + seconds) * 1000)


class UsageRecordFactory(factory.Factory):
    class Meta:
        model = UsageRecord

    request_id = factory.LazyFunction(lambda: str(uuid.uuid4()))
    ts_ms = factory.LazyFunction(lambda: at(seconds=5))
    api = "chat"
    operation = "chat-completions"
    subscription = "master"
    product = "starter"
    backend = "llm-backend"
    model = "gpt-4o-mini"
    prompt_tokens = 10
    completion_tokens = 20
    status = 200
    latency_ms = 100.0
    cache_hit = False
    gateway_id = "gw-1"


class UsageRollupFactory(DjangoModelFactory):
    class Meta:
        model = UsageRollup

    minute = BASE
    api = "chat"
    operation = "chat-completions"
    subscription = "master"
    product = "starter"
    backend = "llm-backend"
    model = "gpt-4o-mini"
    status = 200
    cache_hit = False
    requests = 1
    prompt_tokens = 10
    completion_tokens = 20
    total_tokens = factory.LazyAttribute(lambda row: row.prompt_tokens + row.completion_tokens)
    latency_ms_sum = 100.0
    latency_ms_max = 100.0
