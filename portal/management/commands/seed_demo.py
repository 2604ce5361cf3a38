"""Build the demo organisation through the real services; deterministic and idempotent."""

from __future__ import annotations

import random
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from portal import demo, services
from portal.choices import EntityKind

User = get_user_model()


class Command(BaseCommand):
    help = "Create (or refresh) the demo entities, operators and data. Safe to run twice."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
        parser.add_argument("--quiet-logins", action="store_true", help="do not print logins")
        parser.add_argument(
            "--audience-size", type=int, default=60, help="contacts per local entity (60)"
        )

    def handle(
        self, *args: Any, seed: int, quiet_logins: bool, audience_size: int, **options: Any
    ) -> None:
        rng = random.Random(seed)
        with transaction.atomic():
            services.sync_role_groups()
            entities = self._entities(rng)
            admin = self._user("admin", "Ada", "Admin", superuser=True)
            for username, first, last, code, role in demo.USERS:
                user = self._user(username, first, last)
                services.add_membership(user=user, entity=entities[code], role=role, actor=admin)
            self._extend(rng=rng, entities=entities, admin=admin, audience_size=audience_size)
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        if not quiet_logins:
            for line in demo.login_lines(settings.SITE_URL):
                self.stdout.write(line)

    def _entities(self, rng: random.Random) -> dict[str, Any]:
        hq = services.save_entity(
            code="HQ",
            name="Central marketing",
            kind=EntityKind.CENTRAL,
            contact_email="marketing@demo.example",
        )
        entities = {"HQ": hq}
        for code, name in demo.REGIONS:
            entities[code] = services.save_entity(
                code=code,
                name=name,
                kind=EntityKind.REGION,
                parent=hq,
                contact_email=f"{code.lower()}@demo.example",
            )
        for code, city, region in demo.STORES:
            number = rng.randint(100, 999)
            entities[code] = services.save_entity(
                code=code,
                name=f"{city} store #{number}",
                kind=EntityKind.LOCAL,
                parent=entities[region],
                contact_email=f"store.{code.lower()}@demo.example",
            )
        return entities

    def _user(self, username: str, first: str, last: str, *, superuser: bool = False) -> Any:
        user, created = User.objects.get_or_create(
            username=username,
            defaults={
                "first_name": first,
                "last_name": last,
                "email": f"{username}@demo.example",
                "is_staff": superuser,
                "is_superuser": superuser,
            },
        )
        if created:
            user.set_password(demo.DEMO_PASSWORD)
            user.save(update_fields=["password"])
        return user

    def _extend(
        self, *, rng: random.Random, entities: dict[str, Any], admin: Any, audience_size: int
    ) -> None:
        """Hook for the other apps' demo data (packages, orders, approvals, campaigns)."""
        from django.apps import apps

        for config in apps.get_app_configs():
            seeder = getattr(config, "seed_demo", None)
            if callable(seeder):
                seeder(
                    rng=rng,
                    entities=entities,
                    admin=admin,
                    stdout=self.stdout,
                    audience_size=audience_size,
                )
