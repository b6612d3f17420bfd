"""Project-wide model base class, the configuration revision counter and the reveal audit log."""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

__all__ = ("ConfigRevision", "ConfigurationModel", "RevealRecord")


class ConfigurationModel(models.Model):
    """Base of every model that is part of the gateway configuration snapshot.

    Saving or deleting a row of a subclass, or changing one of its many-to-many relations, bumps
    `ConfigRevision` in the same transaction (see `gateway_admin.signals`).
    """

    created = models.DateTimeField(
        verbose_name="created",
        auto_now_add=True,
    )
    last_updated = models.DateTimeField(
        verbose_name="last updated",
        auto_now=True,
    )

    class Meta:
        abstract = True


class ConfigRevision(models.Model):
    """The revision number of the gateway configuration: one row that grows on every committed change."""

    SINGLETON_ID = 1

    revision = models.BigIntegerField(
        verbose_name="revision",
        default=0,
    )

    class Meta:
        verbose_name = "configuration revision"
        verbose_name_plural = "configuration revisions"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="%(app_label)s_%(class)s_singleton"),
        ]

    def __str__(self):
        return f"revision {self.revision}"

    @classmethod
    def current(cls) -> int:
        """The committed revision as seen by the current transaction."""
        revision = cls.objects.filter(pk=cls.SINGLETON_ID).values_list("revision", flat=True).first()
        return revision or 0

    @classmethod
    def bump(cls) -> None:
        """Add one to the revision with a single UPDATE, so concurrent writers serialise on the row lock."""
        if not cls.objects.filter(pk=cls.SINGLETON_ID).update(revision=F("revision") + 1):
            # The row is created by the initial migration; this only runs if someone deleted it.
            cls.objects.get_or_create(pk=cls.SINGLETON_ID)
            cls.objects.filter(pk=cls.SINGLETON_ID).update(revision=F("revision") + 1)


class RevealRecord(models.Model):
    """One reveal of a secret (a named value's value, a subscription's keys): who, what and when.

    Written by every path that shows a secret in plaintext (the web UI's Reveal action and the REST reveal actions),
    in the same transaction as the read. The secret itself is never stored here.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="user",
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
    )
    username = models.CharField(
        verbose_name="username",
        max_length=150,
        help_text="Kept when the user is deleted.",
    )
    kind = models.CharField(
        verbose_name="kind",
        max_length=40,
        help_text='What was revealed: "named_value" or "subscription".',
    )
    name = models.CharField(
        verbose_name="name",
        max_length=80,
    )
    channel = models.CharField(
        verbose_name="channel",
        max_length=10,
        help_text='"ui", "console" (the test console\'s Show key) or "rest".',
    )
    created = models.DateTimeField(
        verbose_name="when",
        default=timezone.now,
        db_index=True,
    )

    class Meta:
        ordering = ("-created", "-pk")
        verbose_name = "reveal record"
        verbose_name_plural = "reveal records"

    def __str__(self):
        return f"{self.username} revealed {self.kind} '{self.name}' ({self.channel}) at {self.created:%Y-%m-%d %H:%M}"

    @classmethod
    def record(cls, user, kind: str, name: str, channel: str) -> "RevealRecord":
        return cls.objects.create(user=user, username=user.get_username(), kind=kind, name=name, channel=channel)


class GatewayHeartbeat(models.Model):
    """The last report of one gateway (`POST /api/gateway/heartbeat/`, sent by gateway.sync): what it serves and
    how it is. One row per gateway id, updated in place."""

    gateway_id = models.CharField(
        verbose_name="gateway id",
        max_length=200,
        unique=True,
    )
    region = models.CharField(
        verbose_name="region",
        max_length=100,
        blank=True,
        default="",
    )
    revision = models.BigIntegerField(
        verbose_name="snapshot revision",
        null=True,
        blank=True,
        help_text="The revision it serves; empty while it has none.",
    )
    status = models.CharField(
        verbose_name="status",
        max_length=20,
        help_text='"ok", "starting" or "degraded" (serving, but not the configuration last published).',
    )
    problems = models.JSONField(
        verbose_name="problems",
        default=dict,
        blank=True,
        help_text="The refused snapshot and the quarantined items it reported.",
    )
    backends = models.JSONField(
        verbose_name="backend states",
        default=dict,
        blank=True,
        help_text="The circuit breaker state of each guarded backend, as this gateway sees it.",
    )
    interval = models.FloatField(
        verbose_name="interval",
        default=15.0,
        help_text="Seconds between its heartbeats.",
    )
    first_seen = models.DateTimeField(
        verbose_name="first seen",
        default=timezone.now,
    )
    last_seen = models.DateTimeField(
        verbose_name="last seen",
        default=timezone.now,
        db_index=True,
    )

    class Meta:
        ordering = ("gateway_id",)
        verbose_name = "gateway heartbeat"
        verbose_name_plural = "gateway heartbeats"

    def __str__(self):
        return f"{self.gateway_id} ({self.status}, revision {self.revision})"

    def is_stale(self, now=None) -> bool:
        """No heartbeat for three intervals (and at least 45 s): the gateway is probably gone."""
        now = now or timezone.now()
        return (now - self.last_seen).total_seconds() > max(45.0, 3 * self.interval)
