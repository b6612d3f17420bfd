"""Usage of the gateways: per-minute rollups of requests and tokens, and the request ids already counted."""

from django.db import models

from gateway.usage.record import MAX_LENGTHS

__all__ = ("ROLLUP_DIMENSIONS", "UsageRecordSeen", "UsageRollup")

# What a rollup row is unique on; everything else in it is a counter.
ROLLUP_DIMENSIONS = (
    "minute",
    "api",
    "operation",
    "subscription",
    "product",
    "backend",
    "model",
    "status",
    "cache_hit",
    "block_reason",
)


class UsageRollup(models.Model):
    """Requests and tokens of one minute for one combination of API, operation, subscription, product, backend,
    model, status and cache hit. Missing dimensions (no subscription, no backend, ...) are stored as ''."""

    minute = models.DateTimeField(
        verbose_name="minute",
        help_text="Start of the minute (UTC) the requests started in.",
    )
    api = models.CharField(
        verbose_name="API",
        max_length=MAX_LENGTHS["api"],
    )
    operation = models.CharField(
        verbose_name="operation",
        max_length=MAX_LENGTHS["operation"],
    )
    subscription = models.CharField(
        verbose_name="subscription",
        max_length=MAX_LENGTHS["subscription"],
        blank=True,
        default="",
    )
    product = models.CharField(
        verbose_name="product",
        max_length=MAX_LENGTHS["product"],
        blank=True,
        default="",
    )
    backend = models.CharField(
        verbose_name="backend",
        max_length=MAX_LENGTHS["backend"],
        blank=True,
        default="",
    )
    model = models.CharField(
        verbose_name="model",
        max_length=MAX_LENGTHS["model"],
        blank=True,
        default="",
    )
    status = models.PositiveSmallIntegerField(
        verbose_name="status",
    )
    cache_hit = models.BooleanField(
        verbose_name="cache hit",
    )
    block_reason = models.CharField(
        verbose_name="block reason",
        max_length=MAX_LENGTHS["block_reason"],
        blank=True,
        default="",
        help_text="Why a policy refused the requests or cut their responses (content-safety:Hate, ...); '' if none.",
    )
    requests = models.PositiveBigIntegerField(
        verbose_name="requests",
        default=0,
    )
    prompt_tokens = models.PositiveBigIntegerField(
        verbose_name="prompt tokens",
        default=0,
    )
    completion_tokens = models.PositiveBigIntegerField(
        verbose_name="completion tokens",
        default=0,
    )
    total_tokens = models.PositiveBigIntegerField(
        verbose_name="total tokens",
        default=0,
    )
    latency_ms_sum = models.FloatField(
        verbose_name="latency sum (ms)",
        default=0.0,
    )
    latency_ms_max = models.FloatField(
        verbose_name="latency max (ms)",
        default=0.0,
    )
    retried_requests = models.PositiveBigIntegerField(
        verbose_name="retried requests",
        default=0,
        help_text="Requests answered after at least one failed forwarding attempt (retry).",
    )
    failed_attempts = models.PositiveBigIntegerField(
        verbose_name="failed attempts",
        default=0,
        help_text="Forwarding attempts that failed before the answer (a 429 or 5xx retried, a timeout, a refused "
        "connection), summed over the requests; the answer itself is not counted.",
    )

    class Meta:
        ordering = ("minute", "api", "operation")
        verbose_name = "usage rollup"
        verbose_name_plural = "usage rollups"
        constraints = [
            # Its index (minute first) also serves the time-range queries of the usage report.
            models.UniqueConstraint(
                fields=ROLLUP_DIMENSIONS,
                name="%(app_label)s_%(class)s_unique_dimensions",
            ),
        ]

    def __str__(self):
        return f"{self.minute:%Y-%m-%d %H:%M} {self.api}/{self.operation}: {self.requests} requests"


class UsageRecordSeen(models.Model):
    """A request id whose usage is already counted, so a re-delivered record is not counted twice.

    Kept for `SLUICE["USAGE_DEDUPE_HOURS"]` after the request started; records older than that are refused
    (see `usage.services.ingest_records`), so a purged id can never be counted again.
    """

    request_id = models.UUIDField(
        verbose_name="request id",
        primary_key=True,
    )
    ts = models.DateTimeField(
        verbose_name="request start",
        db_index=True,
    )

    class Meta:
        verbose_name = "counted usage record"
        verbose_name_plural = "counted usage records"

    def __str__(self):
        return str(self.request_id)
