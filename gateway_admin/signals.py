"""Bump the configuration revision whenever a configuration row changes.

The receivers run inside the writer's transaction (every REST write runs under ATOMIC_REQUESTS and the services use
`transaction.atomic`), so the new revision commits together with the change or not at all.
"""

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from .models import ConfigRevision, ConfigurationModel

__all__ = ("bump_on_delete", "bump_on_m2m_change", "bump_on_save")

M2M_ACTIONS = frozenset({"post_add", "post_remove", "post_clear"})


@receiver(post_save, dispatch_uid="sluice_bump_on_save")
def bump_on_save(sender, instance, **kwargs):
    if isinstance(instance, ConfigurationModel):
        ConfigRevision.bump()


@receiver(post_delete, dispatch_uid="sluice_bump_on_delete")
def bump_on_delete(sender, instance, **kwargs):
    if isinstance(instance, ConfigurationModel):
        ConfigRevision.bump()


@receiver(m2m_changed, dispatch_uid="sluice_bump_on_m2m_change")
def bump_on_m2m_change(sender, instance, action, **kwargs):
    if action in M2M_ACTIONS and isinstance(instance, ConfigurationModel):
        ConfigRevision.bump()
