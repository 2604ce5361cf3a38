"""Signal receivers that keep groups and object rights in step, whatever the entry point
(admin, services, imports, fixtures)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from portal.models import Entity, Membership


def sync_role_groups(**kwargs: Any) -> None:
    from portal import services

    services.sync_role_groups()


@receiver(post_save, sender=Entity, dispatch_uid="portal.entity_saved")
def entity_saved(sender: type, instance: Entity, created: bool, raw: bool = False, **kw: Any):
    if raw:
        return
    from portal import services

    services.ensure_entity_group(instance)
    if created or getattr(instance, "_tree_changed", False):
        services.sync_entity_rights(instance)


@receiver(post_save, sender=Membership, dispatch_uid="portal.membership_saved")
@receiver(post_delete, sender=Membership, dispatch_uid="portal.membership_deleted")
def membership_changed(sender: type, instance: Membership, raw: bool = False, **kw: Any):
    if raw:
        return
    from portal import services

    services.sync_user_access(instance.user)
