"""factory_boy factories shared by every test folder."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from portal.choices import EntityKind
from portal.models import Entity, Membership

PASSWORD = "correct horse battery staple"


class EntityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Entity
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"E{n:03d}")
    name = factory.LazyAttribute(lambda o: f"Entity {o.code}")
    kind = EntityKind.LOCAL
    contact_email = factory.LazyAttribute(lambda o: f"{o.code.lower()}@example.com")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    first_name = factory.Faker("first_name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    entity = factory.SubFactory(EntityFactory)
    role = "local_operator"


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Campaign"

    name = factory.Sequence(lambda n: f"Campaign {n}")
    kind = "reference"
    collaborative_type = "by_form"
    entity = factory.LazyFunction(lambda: Entity.objects.get(kind=EntityKind.CENTRAL))


class FieldFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.PersonalisationField"

    campaign = factory.SubFactory(CampaignFactory)
    name = factory.Sequence(lambda n: f"field_{n}")
    label = factory.LazyAttribute(lambda o: o.name.replace("_", " ").capitalize())
    field_type = "text"


class PackageFactory(factory.django.DjangoModelFactory):
    """A draft package whose dates are valid for publication (open for two weeks)."""

    class Meta:
        model = "packages.Package"
        skip_postgeneration_save = True

    label = factory.Sequence(lambda n: f"Package {n}")
    reference_campaign = factory.SubFactory(CampaignFactory)
    visible_from = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))
    visible_until = factory.LazyFunction(lambda: timezone.now() + timedelta(days=30))
    registration_deadline = factory.LazyFunction(lambda: timezone.now() + timedelta(days=14))
    execution_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=20))

    @factory.post_generation
    def audience(obj, create, extracted, **kwargs):
        if create and extracted:
            obj.audience.set(extracted)
