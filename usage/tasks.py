"""Celery tasks of the usage app (scheduled by beat, see CELERY_BEAT_SCHEDULE)."""

from celery import shared_task
from django.conf import settings

from .services import purge_seen
from .stream import StreamConsumer, redis_client

__all__ = ("ingest_usage_stream", "purge_usage_dedupe")


@shared_task(ignore_result=True)
def ingest_usage_stream(stream: str | None = None) -> dict[str, int]:
    """Count the usage records the gateways appended to the Redis stream (every 2 s).

    Without REDIS_URL (the embedded default) there is no stream: gateways POST to /api/gateway/usage/ instead.
    """
    if not settings.REDIS_URL:
        return {}
    consumer = StreamConsumer(redis_client(settings.REDIS_URL), stream or settings.SLUICE["USAGE_STREAM"])
    return consumer.run().as_dict()


@shared_task(ignore_result=True)
def purge_usage_dedupe(stream: str | None = None) -> int:
    """Forget counted request ids older than the dedupe window, and consumers of stopped workers (hourly)."""
    if settings.REDIS_URL:
        consumer = StreamConsumer(redis_client(settings.REDIS_URL), stream or settings.SLUICE["USAGE_STREAM"])
        consumer.forget_idle_consumers()
    return purge_seen()
