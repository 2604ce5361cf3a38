"""Demo packages, orders, approvals and child campaigns, built through the real services."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from approvals import services as approvals
from approvals.models import ApprovalRequest
from campaigns.choices import CampaignKind, CollaborativeType, FieldType
from campaigns.models import Campaign, PersonalisationField
from packages import services
from packages.choices import ApprovalMode
from packages.models import Package

User = get_user_model()

OPENING_FIELDS = [
    dict(name="store_offer", label="Offer of the day", field_type=FieldType.TEXT, required=True,
         max_length=80, help_text="Shown as the email's headline."),
    dict(name="discount", label="Discount (%)", field_type=FieldType.NUMBER, required=True,
         min_value=5, max_value=50, default="10"),
    dict(name="event_date", label="Event date", field_type=FieldType.DATE, required=True),
    dict(name="segment", label="Who to invite", field_type=FieldType.CHOICE, required=True,
         choices=["All customers", "Loyalty members", "Lapsed customers"]),
    dict(name="include_map", label="Include a map to the store", field_type=FieldType.BOOLEAN),
    dict(name="flyer", label="Flyer (image or PDF)", field_type=FieldType.FILE,
         allowed_extensions="png,jpg,jpeg,pdf", max_file_size_kb=2048),
]  # fmt: skip
WELCOME_FIELDS = [
    dict(name="signature", label="Signature", field_type=FieldType.TEXT, required=True,
         max_length=60, default="Your local team"),
    dict(name="voucher_code", label="Voucher code", field_type=FieldType.TEXT, max_length=20),
    dict(name="welcome_note", label="Personal note", field_type=FieldType.LONG_TEXT,
         max_length=600),
]  # fmt: skip


def seed_journey_workflow(*, campaign: Campaign) -> None:
    from campaigns.demo import OPTED_IN, workflow

    if campaign.activities.exists():
        return
    workflow(
        campaign,
        [
            ("members", "query", "New members who opted in", {"conditions": {"and": [
                *OPTED_IN["and"], {"field": "created_at", "op": "in_last_days", "value": 90}]}},
             True),
            ("welcome", "delivery", "Welcome email", {"channel": "email",
             "subject": "Welcome, {{ contact.first_name }}",
             "text_body": "Welcome {{ contact.first_name }}! {{ perso.signature }}"}),
            ("wait", "wait", "A week later", {"days": 7}, True),
            ("voucher", "delivery", "Voucher reminder", {"channel": "email",
             "subject": "Your voucher {{ perso.voucher_code }}",
             "text_body": "Use {{ perso.voucher_code }} in store. {{ perso.signature }}"}),
            ("end", "end", "Done", {}),
        ],
        [("members", "welcome", "out"), ("welcome", "wait", "out"), ("wait", "voucher", "out"),
         ("voucher", "end", "out")],
    )  # fmt: skip


def _campaign(*, name: str, kind: str, hq: Any, marketer: Any, fields: list[dict]) -> Campaign:
    campaign, created = Campaign.objects.get_or_create(
        name=name,
        kind=CampaignKind.REFERENCE,
        defaults={
            "collaborative_type": kind,
            "entity": hq,
            "created_by": marketer,
            "description": f"Reference campaign “{name}”.",
        },
    )
    if created:
        for position, spec in enumerate(fields):
            field = PersonalisationField(campaign=campaign, position=position, **spec)
            field.full_clean()
            field.save()
    return campaign


def seed(
    *, rng: random.Random, entities: dict[str, Any], admin: Any, stdout: Any, **_: Any
) -> None:
    marketer = User.objects.get(username="marketer")
    approver = User.objects.get(username="approver")
    ops = {code: User.objects.get(username=name) for code, name in
           [("LIL", "lille"), ("LYO", "lyon"), ("MAR", "marseille"), ("ROU", "north")]}  # fmt: skip
    hq = entities["HQ"]
    stores = [entities[code] for code in ("LIL", "ROU", "AMI", "REI", "LYO", "MAR", "NIC", "TOU")]
    now = timezone.now()

    def package(label: str, campaign: Campaign, **extra: Any) -> tuple[Package, bool]:
        existing = Package.objects.filter(label=label).first()
        if existing:
            return existing, False
        days = extra.pop("days", 14)
        pkg = Package.objects.create(
            label=label,
            description=extra.pop("description", f"{label}: everything your store needs."),
            category=extra.pop("category", "Seasonal"),
            reference_campaign=campaign,
            visible_from=now - timedelta(days=1),
            visible_until=now + timedelta(days=days + 10),
            registration_deadline=now + timedelta(days=days),
            personalisation_deadline=now + timedelta(days=days - 3),
            execution_at=now + timedelta(days=days + 5),
            created_by=marketer,
            **extra,
        )
        pkg.audience.set(stores)
        return pkg, True

    def order(pkg: Package, code: str, data: dict, *, submit: bool = True) -> Any:
        return services.place_order(
            package=pkg, entity=entities[code], actor=ops[code], data=data, submit=submit
        ).order

    def decide(order_obj: Any, approve: bool, comment: str = "") -> None:
        request = ApprovalRequest.objects.for_object(order_obj).pending().first()
        approvals.decide(request=request, actor=approver, approve=approve, comment=comment)

    with transaction.atomic():
        spring = _campaign(name="Spring sale", kind=CollaborativeType.SIMPLE, hq=hq,
                           marketer=marketer, fields=[])  # fmt: skip
        pkg, new = package("Spring sale kit", spring, category="Promotions")
        if new:
            services.publish_package(package=pkg, actor=marketer)
            order(pkg, "LIL", {})
            decide(order(pkg, "LYO", {}), True, "Enjoy the sale!")
            order(pkg, "MAR", {}, submit=False)

        opening = _campaign(name="Store opening event", kind=CollaborativeType.BY_FORM, hq=hq,
                            marketer=marketer, fields=OPENING_FIELDS)  # fmt: skip
        pkg, new = package("Store event invitation", opening, category="Events", days=10)
        if new:
            services.publish_package(package=pkg, actor=marketer)
            event = (now + timedelta(days=20)).date().isoformat()
            order(pkg, "LIL", {"store_offer": "Free coffee all day", "discount": "15",
                               "event_date": event, "segment": "Loyalty members",
                               "include_map": "on"})  # fmt: skip
            decide(
                order(pkg, "ROU", {"store_offer": "Half price on everything", "discount": "50",
                                   "event_date": event, "segment": "All customers"}),
                False,
                "50% everywhere is beyond the budget: keep it under 30% and resubmit.",
            )  # fmt: skip

        welcome = _campaign(name="Loyalty welcome journey", kind=CollaborativeType.BY_CAMPAIGN,
                            hq=hq, marketer=marketer, fields=WELCOME_FIELDS)  # fmt: skip
        seed_journey_workflow(campaign=welcome)  # children copy it; stores may adjust steps
        pkg, new = package("Welcome journey for new members", welcome, category="Loyalty")
        if new:
            services.publish_package(package=pkg, actor=marketer)
            decide(order(pkg, "LYO", {"signature": "Yanis and the Lyon team",
                                      "voucher_code": "LYON10"}), True)  # fmt: skip
            order(pkg, "LIL", {"signature": "The Lille team"})

        newsletter = _campaign(name="Summer newsletter", kind=CollaborativeType.BY_CAMPAIGN,
                               hq=hq, marketer=marketer, fields=WELCOME_FIELDS[:1])  # fmt: skip
        pkg, new = package("Summer newsletter", newsletter, category="Newsletters",
                           approval_mode=ApprovalMode.AUTOMATIC)  # fmt: skip
        if new:
            services.publish_package(package=pkg, actor=marketer)

        winter = _campaign(name="Winter clearance", kind=CollaborativeType.SIMPLE, hq=hq,
                           marketer=marketer, fields=[])  # fmt: skip
        package("Winter clearance kit", winter, category="Promotions")  # stays a draft

        friday = _campaign(name="Black Friday", kind=CollaborativeType.SIMPLE, hq=hq,
                           marketer=marketer, fields=[])  # fmt: skip
        pkg, new = package("Black Friday kit", friday, category="Promotions", days=3)
        if new:
            services.publish_package(package=pkg, actor=marketer)
            decide(order(pkg, "MAR", {}), True)
            services.close_package(package=pkg, actor=marketer, comment="Campaign window over.")

    stdout.write(
        f"Packages: {Package.objects.count()}, campaigns: {Campaign.objects.count()}, "
        f"pending approvals: {ApprovalRequest.objects.pending().count()}"
    )
