"""Project-wide model base class and the configuration revision counter."""

from django.db import models
from django.db.models import F, Q

__all__ = ("ConfigRevision", "ConfigurationModel")


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
