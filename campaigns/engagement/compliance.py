"""What every message of a delivery carries for compliance, computed once per chunk and then
per message without a query: the links of its recipient (unsubscribe, preferences, mirror),
the RFC 8058 headers of marketing emails, the footer a marketing template gets when it lacks
the unsubscribe link or the postal address, and the sender identity of the entity on whose
behalf it goes.

Marketing or transactional is the delivery's typology's ``purpose`` (a delivery without a
typology is marketing). Transactional messages carry neither headers nor footer; their
templates may still use the links.
"""

from __future__ import annotations

import re
from email.utils import formataddr, parseaddr
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils.html import escape
from jinja2 import TemplateError, nodes

from campaigns.choices import Channel, Purpose
from campaigns.delivery import rendering
from campaigns.engagement import tokens
from portal.models import sender_domain_verified

LINK_VARIABLES = ("unsubscribe_url", "preferences_url", "mirror_url")
ONE_CLICK = "List-Unsubscribe=One-Click"

# The footer added to a marketing email's parts that lack the unsubscribe link (and, each on
# its own, the postal address). The template gets a mark where it goes (before ``</body>``,
# or at the end); the footer is put in its place after each render, as plain text: it costs
# a string join per message, not a render (a footer rendered by Jinja cost 30 us/message).
MARK = "\x1f"  # a control character no email text contains
HTML_UNSUBSCRIBE = (
    '<p style="font-size:12px;color:#555">You receive this email because you agreed to hear '
    'from us. <a href="{unsubscribe_url}">Unsubscribe</a> · '
    '<a href="{preferences_url}">Manage your preferences</a> · '
    '<a href="{mirror_url}">View in your browser</a></p>'
)
HTML_ADDRESS = '<p style="font-size:12px;color:#555">{postal_address}</p>'
TEXT_UNSUBSCRIBE = "Unsubscribe: {unsubscribe_url}\nYour preferences: {preferences_url}\n"
TEXT_ADDRESS = "{postal_address}\n"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def is_marketing(delivery: Any) -> bool:
    typology = delivery.typology if delivery.typology_id else None
    return typology is None or typology.purpose != Purpose.TRANSACTIONAL


def uses(source: str, name: str) -> bool:
    """Whether a template reads the variable ``name``."""
    try:
        tree = rendering.TEXT.parse(source)
    except TemplateError:
        return name in source
    return any(node.name == name for node in tree.find_all(nodes.Name))


def footer_needs(source: str) -> tuple[bool, bool]:
    """(lacks the unsubscribe link, lacks the postal address) of a marketing email part."""
    if not source.strip():
        return False, False
    missing_link = not uses(source, "unsubscribe_url")
    missing_address = "postal_address" not in source  # the variable or entity.postal_address
    return missing_link, missing_address


def with_mark(source: str, *, html: bool) -> str:
    """The part with the footer's mark where the footer goes."""
    if html:
        ends = list(_BODY_END.finditer(source))
        at = ends[-1].start() if ends else len(source)
        return source[:at] + MARK + source[at:]
    return source.rstrip("\n") + MARK


verified = sender_domain_verified  # an address at one of DELIVERY_SENDER_DOMAINS


def sender_problems(sender: str) -> list[str]:
    """Why a delivery's sender may not be used (empty: it may)."""
    if not (sender or "").strip():
        return []
    _name, address = parseaddr(sender)
    if "@" not in address:
        return [f"“{sender}” is not an email address (write it as Name <address@domain>)."]
    if not verified(address):
        return [
            f"“{address}” is not at a verified sender domain; use an address at "
            f"{', '.join(settings.DELIVERY_SENDER_DOMAINS)} (DELIVERY_SENDER_DOMAINS), or "
            "leave the sender empty to send as each entity."
        ]
    return []


class Compliance:
    """A delivery's compliance parts, for one renderer (one chunk). ``live``: real sends and
    the mirror; proofs and previews carry sample links that change nothing."""

    def __init__(self, delivery: Any, *, live: bool = True) -> None:
        self.live = live
        self.marketing = is_marketing(delivery)
        self.email = delivery.channel == Channel.EMAIL
        self.signer = tokens.signer()
        base = settings.SITE_URL
        self.urls = {
            name: base + reverse(f"engagement:{name.removesuffix('_url')}", args=["TOKEN"])
            for name in LINK_VARIABLES
        }
        self.mailto = settings.DELIVERY_UNSUBSCRIBE_MAILTO
        self.fixed_sender = delivery.sender or ""
        self.fixed_reply_to = delivery.reply_to or ""
        campaign_entity = delivery.campaign.entity
        self.fallback = {
            key: getattr(campaign_entity, key)
            for key in ("code", "name", "contact_email", "sender_name", "sender_address",
                        "reply_to", "postal_address")
        }  # fmt: skip
        self.identities: dict[str, tuple[str, str, str]] = {}
        self.footers = {}

    def with_footers(self, sources: dict[str, str]) -> dict[str, str]:
        """The delivery's templates, with the footer's mark in each part of a marketing email
        that lacks the unsubscribe link or the postal address (``finish`` fills it)."""
        self.footers: dict[str, tuple[bool, bool, bool]] = {}
        if not (self.marketing and self.email):
            return sources
        out = dict(sources)
        for name, html in (("html_body", True), ("text_body", False)):
            link, address = footer_needs(out.get(name) or "")
            if link or address:
                self.footers[name] = (html, link, address)
                out[name] = with_mark(out[name], html=html)
        return out

    def finish(self, parts: dict[str, str], token: str, entity: dict[str, Any]) -> None:
        """Put each part's footer in place of its mark (the last one: a mark in the data
        before it stays where it is)."""
        for name, (html, link, address) in self.footers.items():
            text = parts.get(name)
            if text is None:
                continue
            before, mark, after = text.rpartition(MARK)
            if not mark:
                continue
            postal = self.identity(entity)[2]
            urls = {key: url.replace("TOKEN", token) for key, url in self.urls.items()}
            if html:
                footer = (HTML_UNSUBSCRIBE.format(**urls) if link else "") + (
                    HTML_ADDRESS.format(postal_address=escape(postal)) if address and postal else ""
                )
            else:
                footer = (TEXT_ADDRESS.format(postal_address=postal) if address and postal
                          else "") + (TEXT_UNSUBSCRIBE.format(**urls) if link else "")  # fmt: skip
                footer = "\n\n-- \n" + footer if footer else ""
            parts[name] = before + footer + after

    def token(self, message_id: int) -> str:
        if self.live and message_id:
            return self.signer.sign(str(message_id))
        return tokens.SAMPLE

    def context(self, token: str, entity: dict[str, Any]) -> dict[str, Any]:
        """The template variables of one message."""
        return {
            **{name: url.replace("TOKEN", token) for name, url in self.urls.items()},
            "postal_address": self.identity(entity)[2],
        }

    def headers(self, token: str) -> dict[str, str]:
        """RFC 8058 one-click unsubscribe, on marketing emails."""
        if not (self.marketing and self.email):
            return {}
        value = f"<{self.urls['unsubscribe_url'].replace('TOKEN', token)}>"
        if self.mailto:
            value += f", <mailto:{self.mailto}?subject=unsubscribe%20{token}>"
        return {"List-Unsubscribe": value, "List-Unsubscribe-Post": ONE_CLICK}

    def identity(self, entity: dict[str, Any]) -> tuple[str, str, str]:
        """(From, Reply-To, postal address) of a message on behalf of ``entity``: the
        delivery's own sender when it has one; otherwise the entity's sender identity when
        its address is at a verified domain, else the campaign's entity's, else the default
        sender (DELIVERY_SENDER). The postal address is the entity's, else the campaign's
        entity's. Computed once per entity."""
        key = entity.get("code", "")
        found = self.identities.get(key)
        if found is not None:
            return found
        postal = ", ".join(
            line.strip()
            for line in (entity.get("postal_address") or self.fallback["postal_address"] or "")
            .strip()
            .splitlines()
            if line.strip()
        )
        if self.fixed_sender:
            found = (self.fixed_sender, self.fixed_reply_to, postal)
        else:
            found = ("", self.fixed_reply_to, postal)
            for source in (entity, self.fallback):
                address = source.get("sender_address") or ""
                if address and verified(address):
                    name = source.get("sender_name") or source.get("name") or ""
                    reply = (self.fixed_reply_to or source.get("reply_to")
                             or source.get("contact_email") or "")  # fmt: skip
                    found = (formataddr((name, address)), reply, postal)
                    break
        self.identities[key] = found
        return found
