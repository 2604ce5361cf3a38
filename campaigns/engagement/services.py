"""Consent changes made by contacts themselves: one-click unsubscribe, the preference page,
SMS STOP replies. Each change is one transaction: the contact's consent (or category
opt-out), an audit entry on the contact (its history in the admin and the portal), and the
contact's messages still waiting in deliveries whose typology applies the consent rule,
excluded under that rule at once (a send already under way skips them). Repeating a change
changes nothing and records nothing."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from api import webhooks
from api.choices import WebhookEvent
from campaigns.choices import Channel
from campaigns.models import CategoryOptOut, Contact, Message, MessageStatus, Typology
from portal import services as portal_services

CONSENT_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.PUSH)
SOURCE_MAX = 50


@dataclass(frozen=True)
class Change:
    """One consent change: a channel's consent, or a category's opt-out."""

    what: str  # a channel, or "category:<name>"
    receiving: bool


def categories() -> list[str]:
    """The categories a contact may opt out of: those the typologies' pressure rules name."""
    found: set[str] = set()
    for rules in Typology.objects.values_list("rules", flat=True):
        for rule in rules if isinstance(rules, list) else []:
            if isinstance(rule, dict) and rule.get("rule") == "pressure":
                name = rule.get("category")
                if isinstance(name, str) and name.strip():
                    found.add(name.strip())
    return sorted(found)


def _consent_typologies() -> list[int]:
    return [
        pk
        for pk, rules in Typology.objects.values_list("pk", "rules")
        if any(isinstance(r, dict) and r.get("rule") == "consent" for r in rules or [])
    ]


def _exclude_waiting(contact_id: int, *, channel: str | None = None, category: str | None = None,
                     ) -> int:  # fmt: skip
    """The contact's messages not yet claimed by a sending worker, in deliveries that apply
    the consent rule (of ``channel``, or of deliveries of ``category``): excluded now."""
    waiting = Message.objects.filter(
        contact_id=contact_id,
        status=MessageStatus.PENDING,
        delivery__typology_id__in=_consent_typologies(),
    )
    if channel:
        waiting = waiting.filter(channel=channel)
    if category:
        waiting = waiting.filter(delivery__category=category)
    return Message.objects.filter(pk__in=list(waiting.values_list("pk", flat=True))).update(
        status=MessageStatus.EXCLUDED, rule="consent"
    )


def set_consent(*, contact: Contact, channel: str, receiving: bool, source: str,
                comment: str = "", actor: Any = None, extra: Mapping[str, Any] | None = None,
                ) -> bool:  # fmt: skip
    """Give or withdraw ``contact``'s consent on ``channel``; returns whether it changed."""
    if channel not in CONSENT_CHANNELS:
        raise ValueError(f"No consent on the {channel} channel.")
    field = f"{channel}_consent"
    with transaction.atomic():
        changed = Contact.objects.filter(pk=contact.pk, **{field: not receiving}).update(
            **{field: receiving, f"{field}_at": timezone.now(),
               f"{field}_source": source[:SOURCE_MAX]}
        )  # fmt: skip
        if not changed:
            return False
        excluded = 0 if receiving else _exclude_waiting(contact.pk, channel=channel)
        verb = "given" if receiving else "withdrawn"
        portal_services.record_audit(
            obj=contact, action=f"consent_{verb}", actor=actor,
            comment=comment or f"{Channel(channel).label} consent {verb} ({source}).",
            extra={"channel": channel, "source": source, "waiting_excluded": excluded,
                   **(extra or {})},
        )  # fmt: skip
    setattr(contact, field, receiving)
    return True


def set_category(*, contact: Contact, category: str, receiving: bool, source: str,
                 actor: Any = None) -> bool:  # fmt: skip
    """Opt ``contact`` out of (or back into) a category; returns whether it changed."""
    with transaction.atomic():
        if receiving:
            changed = CategoryOptOut.objects.filter(contact=contact, category=category).delete()[0]
        else:
            _, changed = CategoryOptOut.objects.get_or_create(contact=contact, category=category)
        if not changed:
            return False
        excluded = 0 if receiving else _exclude_waiting(contact.pk, category=category)
        verb = "opt_in" if receiving else "opt_out"
        portal_services.record_audit(
            obj=contact, action=f"category_{verb}", actor=actor,
            comment=f"{'Receives' if receiving else 'No longer receives'} “{category}” "
            f"messages ({source}).",
            extra={"category": category, "source": source, "waiting_excluded": excluded},
        )  # fmt: skip
    return True


def _channel_of(message: Message) -> str:
    """The consent channel a message's unsubscribe withdraws."""
    return message.channel if message.channel in CONSENT_CHANNELS else Channel.EMAIL


def unsubscribe(*, message: Message, source: str) -> bool:
    """The recipient of ``message`` unsubscribes from its channel (an email's link or its
    one-click header), recorded as the message's unsubscribe event. Idempotent."""
    channel = _channel_of(message)
    with transaction.atomic():
        changed = set_consent(
            contact=message.contact, channel=channel, receiving=False, source=source,
            extra={"message": message.pk, "delivery": message.delivery_id},
        )  # fmt: skip
        if changed:
            _unsubscribed(message, channel, source)
    return changed


def _unsubscribed(message: Message, channel: str, source: str) -> None:
    """What an unsubscribe from ``message`` adds to the consent change: the message's
    unsubscribe event (the delivery's unsubscribe figure, once per message) and the
    outgoing webhook. Inside the consent change's transaction."""
    from campaigns.engagement.events import record_event

    record_event(message, "unsubscribe", agent_class="", detail=source)
    webhooks.emit(
        WebhookEvent.CONTACT_UNSUBSCRIBED, obj=message.contact,
        extra={"channel": channel, "message": message.pk, "delivery": message.delivery_id,
               "source": source},
    )  # fmt: skip


def set_preferences(
    *, contact: Contact, channels: Mapping[str, bool], opted_out: Iterable[str],
    source: str = "preference page", message: Message | None = None,
) -> list[Change]:  # fmt: skip
    """The preference page: consent per channel, and the categories opted out of (among
    ``categories()``). Returns what changed (each change audited). ``message``: the message
    whose link led to the page; withdrawing consent on that message's channel is its
    unsubscribe, recorded as the one-click unsubscribe records it (event, webhook), so that
    the delivery's report counts it. (Withdrawing another channel's consent is not that
    message's unsubscribe: audited only.)"""
    changes = []
    with transaction.atomic():
        for channel, receiving in channels.items():
            extra = ({"message": message.pk, "delivery": message.delivery_id}
                     if message is not None and not receiving else None)  # fmt: skip
            if set_consent(contact=contact, channel=channel, receiving=receiving, source=source,
                           extra=extra):  # fmt: skip
                changes.append(Change(channel, receiving))
                if message is not None and not receiving and channel == _channel_of(message):
                    _unsubscribed(message, channel, source)
        out = set(opted_out)
        for category in categories():
            receiving = category not in out
            if set_category(contact=contact, category=category, receiving=receiving,
                            source=source):  # fmt: skip
                changes.append(Change(f"category:{category}", receiving))
    return changes


# SMS replies that mean "stop" (RFC-free, but what carriers and CTIA/CNIL guidance list).
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "ARRET",
                        "ARRETER", "STOPSMS", "DESABONNER", "BAJA"})  # fmt: skip


def is_stop(text: str) -> bool:
    """Whether an SMS reply asks to stop: its first word (accents, case and punctuation
    ignored), or the whole text without spaces ("STOP SMS")."""
    plain = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode().upper()
    words = re.findall(r"[A-Z]+", plain)
    return bool(words) and (words[0] in STOP_WORDS or "".join(words) in STOP_WORDS)


def phone_variants(phone: str) -> set[str]:
    """The ways a number may be stored: as given, digits with and without '+', and the
    national form of a +33 / 0033 number ("0612…")."""
    raw = (phone or "").strip()
    digits = re.sub(r"\D", "", raw)
    if not digits:
        return set()
    found = {raw, digits, f"+{digits}"}
    if digits.startswith("00"):
        found |= {f"+{digits[2:]}", digits[2:]}
    return found


def sms_stop(*, phone: str, text: str, gateway_id: str = "") -> int:
    """A STOP reply from ``phone``: every contact with that number loses SMS consent (audited,
    waiting SMS excluded). Returns how many contacts changed."""
    variants = phone_variants(phone)
    if not variants or not is_stop(text):
        return 0
    changed = 0
    query = Q(phone__in=variants)
    for contact in Contact.objects.filter(query).order_by("pk"):
        changed += set_consent(
            contact=contact, channel=Channel.SMS, receiving=False, source="SMS STOP reply",
            comment=f"SMS consent withdrawn: the contact replied “{text.strip()[:40]}”.",
            extra={"gateway_id": gateway_id[:100]} if gateway_id else None,
        )  # fmt: skip
    return changed
