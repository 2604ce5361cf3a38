"""API-triggered messages: the definition's rules (schema, content, life cycle) and the
trigger itself, one rule for the admin, the API and the benchmarks.

A trigger is checked in this order, and nothing is written until every check passed: the
definition (404 unknown, 409 paused), the idempotency key (a key seen before returns the
message it made, whatever the new body), the payload against the JSON Schema (400, each
problem with its JSON path), the recipient (404 outside the caller's contacts), the typology
(422 with the rule and the reason: consent, blocklist, quarantine, pressure) and a render of
the content with this payload (400). Then one transaction writes the idempotency record and
the message row; the send is enqueued on the ``priority`` queue when it commits and goes
through the batch sender's chunk code (claim, in-flight mark, provider), for this one row.
"""

from __future__ import annotations

import copy
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from campaigns.choices import Channel, Purpose
from campaigns.delivery import rendering
from campaigns.delivery.sending import CONTACT_PATHS, ENTITY_KEYS, RENDER_ERRORS, Renderer
from campaigns.delivery.typology import CONSENT_FIELDS, _counted
from campaigns.models import (
    Campaign,
    CategoryOptOut,
    Contact,
    Delivery,
    DeliveryState,
    Message,
    MessageStatus,
    Quarantine,
    TriggerDefinition,
    TriggeredMessage,
    TriggerKind,
    TriggerState,
    Typology,
)
from campaigns.models.campaign import CampaignKind, CampaignState
from portal import services as portal_services
from portal.exceptions import DomainError
from portal.models import Entity, is_central_user

CONTENT_FIELDS = ("sender", "reply_to", "subject", "html_body", "text_body", "push_title")
ADDRESS_FIELDS = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.PUSH: "push_token"}
PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{4,30}$")
MAX_IDEMPOTENCY_KEY = 255


# --------------------------------------------------------------------------------------------
# Errors (the API answers each with its status)
# --------------------------------------------------------------------------------------------


class TriggerError(Exception):
    status = 400

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class TriggerNotFound(TriggerError):
    status = 404


class TriggerPaused(TriggerError):
    status = 409


class TriggerInvalid(TriggerError):
    status = 400


class TriggerRefused(TriggerError):
    """The typology excludes the recipient: nothing is written, nothing sent."""

    status = 422

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule


# --------------------------------------------------------------------------------------------
# The definition
# --------------------------------------------------------------------------------------------


def schema_problems(schema: Any) -> list[str]:
    """A payload schema is a valid JSON Schema (2020-12) describing an object."""
    if not isinstance(schema, dict):
        return ['The schema must be a JSON object, e.g. {"type": "object"}.']
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = exc.json_path if exc.path else "$"
        return [f"Not a valid JSON Schema at {where}: {exc.message}"]
    if schema.get("type", "object") != "object":
        return ['The payload is a JSON object: the schema\'s "type" must be "object".']
    return []


def sample_payload(schema: Any, depth: int = 0) -> Any:
    """A payload with every property the schema describes (template validation at save):
    a name the schema does not describe renders empty, as an absent optional one does."""
    if not isinstance(schema, dict) or depth > 20:
        return ""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return rendering.Data(
            {
                name: sample_payload(sub, depth + 1)
                for name, sub in properties.items()
                if isinstance(name, str)
            }
        )
    if kind == "array":
        return [sample_payload(schema.get("items") or {}, depth + 1)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    return f"<{schema.get('title') or 'value'}>"


def definition_problems(definition: TriggerDefinition) -> dict[str, list[str]]:
    """Every problem of a definition, per field: its schema, its content (rendered with a
    sample payload and a sample contact), what its channel and kind need."""
    from campaigns.delivery.services import content_problems
    from campaigns.engagement.compliance import sender_problems

    problems: dict[str, list[str]] = {}
    if found := schema_problems(definition.payload_schema):
        problems["payload_schema"] = found
    if definition.channel == Channel.DIRECT_MAIL:
        problems["channel"] = ["A triggered message is an email, an SMS or a push."]
        return problems
    payload = sample_payload(definition.payload_schema) if not found else rendering.Data()
    problems.update(
        content_problems(
            channel=definition.channel,
            fields={name: getattr(definition, name) for name in CONTENT_FIELDS},
            multi_level=False,
            perso=rendering.Data(),
            extra={"payload": payload},
        )
    )
    if definition.channel == Channel.EMAIL and (refused := sender_problems(definition.sender)):
        problems["sender"] = refused
    if definition.pressure_typology_id and definition.kind != TriggerKind.MARKETING:
        problems["pressure_typology"] = ["Pressure rules apply to marketing messages only."]
    return problems


def effective_rules(definition: TriggerDefinition) -> list[dict[str, Any]]:
    """Transactional: blocklist and quarantine. Marketing: consent, blocklist, quarantine and
    the pressure rules of its typology."""
    if definition.kind == TriggerKind.TRANSACTIONAL:
        return [{"rule": "blocklist"}, {"rule": "quarantine"}]
    pressure = []
    if definition.pressure_typology_id:
        pressure = [
            dict(rule)
            for rule in definition.pressure_typology.rules or []
            if isinstance(rule, dict) and rule.get("rule") == "pressure"
        ]
    return [{"rule": "consent"}, {"rule": "blocklist"}, {"rule": "quarantine"}, *pressure]


def _sync_hidden(definition: TriggerDefinition, actor: Any) -> None:
    """Create, or bring up to date, the hidden campaign, typology and delivery the messages
    hang on (the delivery stays "sending": it takes a message at each trigger)."""
    purpose = (
        Purpose.TRANSACTIONAL if definition.kind == TriggerKind.TRANSACTIONAL else Purpose.MARKETING
    )
    label = f"Triggered: {definition.name}"
    content = {name: getattr(definition, name) for name in CONTENT_FIELDS}
    if definition.delivery_id is None:
        campaign = Campaign.objects.create(
            name=label, entity=definition.entity, kind=CampaignKind.LOCAL,
            state=CampaignState.RUNNING, created_by=actor,
            description="Messages of an API-triggered definition (made when it was published).",
        )  # fmt: skip
        typology = Typology.objects.create(
            name=label, entity=definition.entity, purpose=purpose,
            rules=effective_rules(definition),
        )  # fmt: skip
        definition.delivery = Delivery.objects.create(
            campaign=campaign, label=label, channel=definition.channel,
            category=definition.category, typology=typology, state=DeliveryState.SENDING,
            triggered=True, created_by=actor, progress_at=timezone.now(), **content,
        )  # fmt: skip
        return
    delivery = definition.delivery
    Typology.objects.filter(pk=delivery.typology_id).update(
        name=label, purpose=purpose, rules=effective_rules(definition)
    )
    Campaign.objects.filter(pk=delivery.campaign_id).update(name=label)
    Delivery.objects.filter(pk=delivery.pk).update(
        label=label, channel=definition.channel, category=definition.category, **content
    )


def _check_editable(definition: TriggerDefinition, actor: Any) -> None:
    if actor is not None:
        portal_services.check_may_act_for(
            actor=actor, entity=definition.entity, perm="campaigns.change_triggerdefinition"
        )


PAST = {"publish": "published", "pause": "paused", "resume": "resumed", "archive": "archived"}


def _move(definition: TriggerDefinition, name: str, actor: Any, **kwargs: Any) -> Any:
    _check_editable(definition, actor)
    with transaction.atomic():
        locked = TriggerDefinition.objects.select_for_update().get(pk=definition.pk)
        allowed = [t.name for t in locked.get_available_state_transitions()]
        if name not in allowed:
            raise DomainError(
                f"A {locked.get_state_display().lower()} triggered message cannot be {PAST[name]}."
            )
        if name in ("publish", "resume"):
            problems = definition_problems(locked)
            if problems:
                raise ValidationError(problems)
            _sync_hidden(locked, actor)
            if not locked.key:
                locked.key = secrets.token_urlsafe(24)
        portal_services.transition(
            obj=locked, name=name, actor=actor, check_permission=False, **kwargs
        )
    return locked


def publish(*, definition: TriggerDefinition, actor: Any) -> TriggerDefinition:
    """Draft → published: checked, its hidden delivery made, its key given."""
    return _move(definition, "publish", actor, at=timezone.now())


def pause(*, definition: TriggerDefinition, actor: Any) -> TriggerDefinition:
    return _move(definition, "pause", actor)


def resume(*, definition: TriggerDefinition, actor: Any) -> TriggerDefinition:
    """Paused → published, with the content as edited meanwhile."""
    return _move(definition, "resume", actor)


def archive(*, definition: TriggerDefinition, actor: Any) -> TriggerDefinition:
    return _move(definition, "archive", actor)


# --------------------------------------------------------------------------------------------
# Triggering
# --------------------------------------------------------------------------------------------


@dataclass
class Accepted:
    record: TriggeredMessage
    created: bool  # False: a repeated idempotency key, the earlier message
    message: Message = field(init=False)

    def __post_init__(self) -> None:
        self.message = self.record.message


# Published definitions with their hidden delivery, campaign, typology and entity, per process,
# by (id, updated_at): each trigger reads one light row to know the definition's state and
# version (any change through the services or the admin saves ``updated_at``).
_definitions: dict[tuple[int, Any], TriggerDefinition] = {}


def find_definition(key: str, *, actor: Any = None, idempotency_key: str = "") -> TriggerDefinition:
    """The live definition with this key, from the per-process cache while its version
    (``updated_at``) holds. With an idempotency key, the same query also tells whether this
    caller used it before: ``definition.earlier_id`` (the TriggeredMessage's id, or None)."""
    row = _definition_row(key, actor, idempotency_key) if key else None
    if row is None:
        raise TriggerNotFound("No published triggered message has this key.")
    version = row[:2]
    definition = _definitions.get(version)
    if definition is None:
        related = ("entity", "delivery__campaign__entity", "delivery__typology")
        definition = next(
            iter(TriggerDefinition.objects.select_related(*related).filter(pk=version[0])), None
        )
        if definition is None:
            raise TriggerNotFound("No published triggered message has this key.")
        if len(_definitions) > 200:
            _definitions.clear()
        _definitions[version] = definition
    definition = copy.copy(definition)  # (the cached one is shared by threads: never changed)
    definition.earlier_id = row[2]
    return definition


# The trigger's two reads are written as SQL once (table and column names from the models,
# quoted; every value a parameter): built by the ORM they cost more CPU than the rest of a
# trigger together, and a web process is measured in triggers per second.


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _definition_row(key: str, actor: Any, idempotency_key: str) -> tuple | None:
    """(id, version, id of this caller's earlier TriggeredMessage with this key or None) of
    the published or paused definition with this key."""
    d, t = TriggerDefinition._meta, TriggeredMessage._meta
    earlier, params = "NULL", []
    if idempotency_key and actor is not None and actor.pk is not None:
        earlier = (
            f"(SELECT t.{_q(t.pk.column)} FROM {_q(t.db_table)} t "
            f"WHERE t.{_q(t.get_field('definition').column)} = d.{_q(d.pk.column)} "
            f"AND t.{_q(t.get_field('owner').column)} = %s "
            f"AND t.{_q(t.get_field('idempotency_key').column)} = %s)"
        )
        params = [actor.pk, idempotency_key]
    sql = (
        f"SELECT d.{_q(d.pk.column)}, d.{_q(d.get_field('updated_at').column)}, {earlier} "
        f"FROM {_q(d.db_table)} d WHERE d.{_q(d.get_field('key').column)} = %s "
        f"AND d.{_q(d.get_field('state').column)} IN (%s, %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, key, TriggerState.PUBLISHED, TriggerState.PAUSED])
        return cursor.fetchone()


def _find_contact(definition: TriggerDefinition, actor: Any, name: str, value: Any) -> Any:
    """The contact with this id or external id among those ``actor`` sees (``visible_to``),
    with ``in_quarantine``: whether its address for the channel is in quarantine."""
    c, qt = Contact._meta, Quarantine._meta
    column = c.get_field(ADDRESS_FIELDS[definition.channel]).column
    key = c.pk.column if name == "contact_id" else c.get_field("external_id").column
    where, params = f"c.{_q(key)} = %s", [value if name == "contact_id" else str(value)]
    if not is_central_user(actor):
        ids = Entity.objects.visible_ids(actor)
        if not ids:
            return None
        marks = ", ".join(["%s"] * len(ids))
        where += f" AND c.{_q(c.get_field('entity').column)} IN ({marks})"
        params += ids
    sql = (
        f"SELECT c.*, EXISTS(SELECT 1 FROM {_q(qt.db_table)} q "
        f"WHERE q.{_q(qt.get_field('channel').column)} = %s "
        f"AND q.{_q(qt.get_field('address').column)} = c.{_q(column)}) AS in_quarantine "
        f"FROM {_q(c.db_table)} c WHERE {where} LIMIT 1"
    )
    return next(iter(Contact.objects.raw(sql, [definition.channel, *params])), None)


# What the render check reads of an entity, per process for a minute (a check: the sender
# renders with the entity as it is when it sends).
_entities: dict[int, tuple[float, dict[str, Any]]] = {}


def _entity_values(entity_id: int) -> dict[str, Any]:
    cached = _entities.get(entity_id)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    values = Entity.objects.filter(pk=entity_id).values(*ENTITY_KEYS).first() or {}
    if len(_entities) > 1000:
        _entities.clear()
    _entities[entity_id] = (time.monotonic() + 60, values)
    return values


def _earlier(
    actor: Any, definition: TriggerDefinition, key: str, *, pk: int | None = None
) -> TriggeredMessage | None:
    found = TriggeredMessage.objects.select_related("message")
    if pk is not None:
        found = found.filter(pk=pk)
    else:
        found = found.filter(owner=actor, definition=definition, idempotency_key=key)
    return next(iter(found.order_by()[:1]), None)


def _per_version(cache: dict[tuple[int, Any], Any], key: tuple[int, Any], build: Any) -> Any:
    """A per-process cache keyed by (id, version): built once, emptied past 200 entries."""
    value = cache.get(key)
    if value is None:
        if len(cache) > 200:
            cache.clear()
        value = cache[key] = build()
    return value


# A compiled JSON Schema validator per definition version, per process.
_validators: dict[tuple[int, Any], Draft202012Validator] = {}


def _validator(definition: TriggerDefinition) -> Draft202012Validator:
    return _per_version(
        _validators,
        (definition.pk, definition.updated_at),
        lambda: Draft202012Validator(definition.payload_schema or {}),
    )


def payload_problems(definition: TriggerDefinition, payload: Any) -> list[dict[str, str]]:
    """Each way the payload breaks the schema, with its JSON path (``$.items[0].sku``)."""
    if not isinstance(payload, dict):
        return [{"path": "payload", "json_path": "$", "message": "The payload is a JSON object."}]
    found = _validator(definition).iter_errors(payload)
    errors = sorted(found, key=lambda e: list(map(str, e.path)))
    return [
        {
            "path": "/".join(["payload", *map(str, error.absolute_path)]),
            "json_path": error.json_path,
            "message": error.message,
        }
        for error in errors[:100]
    ]


def resolve_recipient(
    definition: TriggerDefinition, actor: Any, recipient: Mapping[str, Any]
) -> tuple[Contact | None, str]:
    """The contact (among those the caller may see: 404 otherwise) or, for a transactional
    message, a bare address; and the address the message goes to."""
    given = [name for name in ("contact_id", "external_id", "email", "phone") if
             recipient.get(name) not in (None, "")]  # fmt: skip
    if len(given) != 1:
        raise TriggerInvalid(
            "Give one recipient.",
            [{"path": "recipient", "message": "Give exactly one of contact_id, external_id, "
              "email or phone."}],
        )  # fmt: skip
    name = given[0]
    value = recipient[name]
    if name in ("contact_id", "external_id"):
        if name == "contact_id" and (isinstance(value, bool) or not isinstance(value, int)):
            raise TriggerInvalid(
                "The recipient is invalid.",
                [{"path": "recipient/contact_id", "message": "A contact id is a whole number."}],
            )
        if name == "contact_id" and abs(value) >= 2**63:
            raise TriggerNotFound("No contact with this contact id.")
        contact = _find_contact(definition, actor, name, value)
        if contact is None:
            raise TriggerNotFound(f"No contact with this {name.replace('_', ' ')}.")
        return contact, getattr(contact, ADDRESS_FIELDS[definition.channel]) or ""
    # A bare address: a transactional message to someone who is not a contact.
    path = f"recipient/{name}"
    if definition.kind != TriggerKind.TRANSACTIONAL:
        raise TriggerInvalid(
            "A marketing message goes to a contact.",
            [{"path": path, "message": "Give contact_id or external_id: a marketing message "
              "needs the contact's consent."}],
        )  # fmt: skip
    wanted = {Channel.EMAIL: "email", Channel.SMS: "phone"}.get(definition.channel)
    if name != wanted:
        needs = f"an {wanted}" if wanted == "email" else ("a phone" if wanted else "a contact")
        raise TriggerInvalid(
            "The recipient does not fit the channel.",
            [{"path": path, "message": f"A {definition.get_channel_display()} needs {needs}."}],
        )
    address = str(value).strip()
    try:
        if name == "email":
            validate_email(address)
        elif not PHONE.match(address):
            raise ValidationError("bad phone")
    except ValidationError:
        raise TriggerInvalid(
            "The recipient is invalid.", [{"path": path, "message": f"Not a valid {name}."}]
        ) from None
    return None, address


def refusal(
    definition: TriggerDefinition,
    contact: Contact | None,
    address: str,
    *,
    pressure: bool,
    besides: int | None = None,
) -> tuple[str, str] | None:
    """The first typology rule that excludes this recipient, with the reason; ``pressure``:
    the pressure rules only (checked again under the contact's lock), else the others."""
    channel = definition.channel
    for rule in definition.delivery.typology.rules or []:
        name = rule.get("rule")
        if (name == "pressure") != pressure:
            continue
        if name == "consent" and contact is not None:
            consent = CONSENT_FIELDS[channel].removeprefix("contact__")
            if not getattr(contact, consent):
                return name, f"The contact has not consented to {channel} messages."
            category = definition.category
            if (
                category
                and CategoryOptOut.objects.filter(contact=contact, category=category).exists()
            ):
                return name, f"The contact opted out of “{category}” messages."
        elif name == "blocklist" and contact is not None and contact.blocklisted:
            return name, "The contact is on the blocklist."
        elif name == "quarantine" and _quarantined(contact, channel, address):
            return name, f"The address {address} is in quarantine (it bounced)."
        elif name == "pressure" and contact is not None:
            if rule.get("category") and rule["category"] != definition.category:
                continue
            since = timezone.now() - timedelta(days=rule["days"])
            probe = Delivery(channel=channel, category=definition.category)  # counts every one
            counted = (
                Message.objects.filter(contact=contact)
                .filter(Q(sent_at__gte=since) | Q(sent_at=None))
                .filter(_counted(probe))
            )
            if rule.get("category"):
                counted = counted.filter(delivery__category=rule["category"])
            if besides is not None:  # the trigger's own message, written already
                counted = counted.exclude(pk=besides)
            if counted.count() >= rule["max"]:
                return name, (
                    f"The contact already had {rule['max']} message(s) in the last "
                    f"{rule['days']} day(s) (pressure rule)."
                )
    return None


def _quarantined(contact: Contact | None, channel: str, address: str) -> bool:
    known = getattr(contact, "in_quarantine", None) if contact is not None else None
    if known is not None and address == getattr(contact, ADDRESS_FIELDS[channel], None):
        return known
    return Quarantine.objects.filter(channel=channel, address=address).exists()


_renderers: dict[tuple[int, Any], Renderer] = {}


def _renderer(definition: TriggerDefinition) -> Renderer:
    """One compiled renderer per definition version in this process."""
    return _per_version(
        _renderers,
        (definition.delivery_id, definition.updated_at),
        lambda: Renderer(definition.delivery),
    )


def render_check(
    definition: TriggerDefinition, contact: Contact | None, address: str, payload: dict
) -> None:
    """The content renders with this payload (as the sender will render it)."""
    if contact is not None:
        entity = _entity_values(contact.entity_id)
    else:
        entity = {key: getattr(definition.entity, key) for key in ENTITY_KEYS}
    recipient = {
        "id": 0, "address": address, "secondary_id": 0, "data": payload,
        "entity": {key: entity.get(key, "") for key in ENTITY_KEYS},
        "contact": {key: (getattr(contact, path) if contact is not None else "")
                    for key, path in CONTACT_PATHS.items()},
    }  # fmt: skip
    try:
        _renderer(definition).render(recipient)
    except (*RENDER_ERRORS, ArithmeticError, LookupError) as exc:  # a division by zero…
        raise TriggerInvalid(
            "The message cannot be rendered with this payload.",
            [{"path": "payload", "message": f"Cannot render: {exc}"}],
        ) from None


def trigger(
    *,
    key: str,
    actor: Any,
    recipient: Mapping[str, Any],
    payload: Any,
    idempotency_key: str = "",
) -> Accepted:
    """Accept a trigger: one message row, sent on the priority queue after commit. A key
    used before (by the same caller, for the same definition) returns the earlier message
    and sends nothing, even when two identical requests race (the unique constraint
    decides; the loser reads the winner's row)."""
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        find_definition(key)  # (an unknown key is 404 first)
        raise TriggerInvalid(
            "The Idempotency-Key header is too long.",
            [{"path": "Idempotency-Key", "message": f"At most {MAX_IDEMPOTENCY_KEY} characters."}],
        )
    definition = find_definition(key, actor=actor, idempotency_key=idempotency_key)
    if definition.earlier_id is not None and (
        earlier := _earlier(actor, definition, idempotency_key, pk=definition.earlier_id)
    ):
        return Accepted(earlier, created=False)
    if definition.state == TriggerState.PAUSED:
        raise TriggerPaused("This triggered message is paused: nothing is sent.")
    if problems := payload_problems(definition, payload):
        raise TriggerInvalid("The payload does not match the schema.", problems)
    contact, address = resolve_recipient(definition, actor, recipient)
    if not address:
        raise TriggerRefused(
            "missing_address",
            f"The contact has no {ADDRESS_FIELDS[definition.channel].replace('_', ' ')}.",
        )
    if refused := refusal(definition, contact, address, pressure=False):
        raise TriggerRefused(*refused)
    render_check(definition, contact, address, payload)
    pressure = any(r.get("rule") == "pressure" for r in definition.delivery.typology.rules or [])
    try:
        with transaction.atomic():
            message = Message.objects.create(
                delivery_id=definition.delivery_id,
                contact=contact,
                # Reports per entity and the sender identity: the contact's entity.
                entity_id=contact.entity_id if contact is not None else definition.entity_id,
                # Unique per (delivery, contact, secondary id): a random negative number per
                # trigger (never a booking's id), so one contact gets any number of them.
                secondary_id=-secrets.randbits(62) - 1,
                channel=definition.channel,
                address=address,
                data=payload,
                status=MessageStatus.PENDING,
            )
            # The idempotency record: a concurrent duplicate waits here for this transaction,
            # then fails on the constraint (its message row goes with its rollback) and
            # reads this row.
            record = TriggeredMessage.objects.create(
                definition=definition, owner=actor, idempotency_key=idempotency_key,
                message=message,
            )  # fmt: skip
            if pressure and contact is not None:
                # Two triggers for one contact count one after the other.
                Contact.objects.select_for_update().filter(pk=contact.pk).exists()
                if refused := refusal(
                    definition, contact, address, pressure=True, besides=message.pk
                ):
                    raise TriggerRefused(*refused)
            transaction.on_commit(partial(enqueue, definition.delivery_id, message.pk))
    except IntegrityError:
        earlier = _earlier(actor, definition, idempotency_key) if idempotency_key else None
        if earlier is None:
            raise
        return Accepted(earlier, created=False)
    return Accepted(record, created=True)


def enqueue(delivery_id: int, message_id: int) -> None:
    from campaigns.tasks import send_triggered

    send_triggered.delay(delivery_id, message_id)


def send(delivery_id: int, message_id: int) -> dict[str, Any]:
    """Send one triggered message: the batch sender's chunk code over a one-row range."""
    from campaigns.delivery import sending

    return sending.send_chunk(delivery_id, message_id, message_id)
