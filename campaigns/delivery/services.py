"""Delivery services: content validation (one rule for the admin, the workflow activity and
the API), deliveries created by a workflow's delivery activity, previews."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction

from campaigns.choices import Channel, Dimension
from campaigns.delivery import preparation, rendering
from campaigns.delivery.sending import CONTACT_PATHS
from campaigns.engagement.compliance import sender_problems
from campaigns.models import Campaign, Delivery, DeliveryState, Typology

TEMPLATE_FIELDS = rendering.CHANNEL_FIELDS  # what each channel renders, validates and shows
# Fields of a delivery that belong to some channels only: each channel shows its template
# fields and these extras, and hides the rest.
CHANNEL_ONLY_FIELDS = ("subject", "html_body", "text_body", "push_title", "push_data", "columns",
                       "export_format", "export_file", "track_opens", "track_clicks")  # fmt: skip
CHANNEL_EXTRA_FIELDS = {
    Channel.EMAIL: ("track_opens", "track_clicks"),
    Channel.PUSH: ("push_data",),
    Channel.DIRECT_MAIL: ("columns", "export_format", "export_file"),
}
SMS_SEGMENT = 160
WAIT_FOR_SENDING = timedelta(days=30)  # the activity goes on when its delivery is sent


def perso_of(campaign: Campaign | None) -> dict[str, Any]:
    """What ``perso`` holds for validation: every personalisation field the campaign (or its
    parent) defines, with its value when known; without a campaign, any name is accepted."""
    if campaign is None:
        return rendering.Data()
    source = campaign.parent if campaign.parent_id else campaign
    names = source.personalisation_fields.values_list("name", flat=True)
    return {**{name: f"<{name}>" for name in names}, **(campaign.personalisation_values or {})}


def fields_shown(channel: str) -> list[str]:
    """The channel-specific fields a delivery of ``channel`` shows (admin and portal)."""
    return [*TEMPLATE_FIELDS.get(channel, {}), *CHANNEL_EXTRA_FIELDS.get(channel, ())]


def fields_hidden(channel: str) -> set[str]:
    return set(CHANNEL_ONLY_FIELDS) - set(fields_shown(channel))


def content_problems(
    *,
    channel: str,
    fields: Mapping[str, Any],
    multi_level: bool,
    perso: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """Problems per content field the channel renders (``TEMPLATE_FIELDS``; the others are
    neither rendered nor shown for it): syntax, unknown variables, sandbox refusals, the
    render budget, and what the channel needs (an email needs a subject and a body).
    ``extra``: more sample variables (a triggered message's ``payload``)."""
    context = {**rendering.sample_context(multi_level=multi_level, perso=perso), **(extra or {})}
    problems: dict[str, list[str]] = {}
    # One budget for all the fields, as at send, where they are the parts of one render; the
    # fields after one over budget are not tried (the budget is spent).
    with rendering.budget():
        for name, html in TEMPLATE_FIELDS.get(channel, {}).items():
            source = fields.get(name) or ""
            found = rendering.validate_template(source, html=html, context=context)
            if found:
                problems[name] = found
                if found[0].startswith("over budget"):
                    break
    if channel == Channel.EMAIL:
        if not (fields.get("subject") or "").strip():
            problems.setdefault("subject", []).append("An email needs a subject.")
        if not (fields.get("html_body") or fields.get("text_body") or "").strip():
            problems.setdefault("text_body", []).append("An email needs a body.")
    if channel in (Channel.SMS, Channel.PUSH) and not (fields.get("text_body") or "").strip():
        problems.setdefault("text_body", []).append("The message needs a text.")
    if channel == Channel.PUSH and not isinstance(fields.get("push_data") or {}, dict):
        problems.setdefault("push_data", []).append(
            'Give the push data as an object, e.g. {"screen": "offers"}.'
        )
    if channel == Channel.DIRECT_MAIL:
        problems.update(export_problems(fields.get("columns"), fields.get("export_format")))
    return problems


EXPORT_COLUMNS = list(CONTACT_PATHS)  # the contact's own fields, as rendering reads them
EXPORT_FORMATS = ("csv", "xlsx")


def export_problems(columns: Any, export_format: Any) -> dict[str, list[str]]:
    """Direct mail: the columns are contact fields (empty: first and last name), the format
    CSV or XLSX."""
    problems: dict[str, list[str]] = {}
    if columns in (None, ""):
        columns = []
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        problems["columns"] = ['Give a list of contact fields, e.g. ["first_name", "email"].']
    elif unknown := [c for c in columns if c not in EXPORT_COLUMNS]:
        problems["columns"] = [
            f"Unknown column{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
            f"Choose among {', '.join(EXPORT_COLUMNS)}."
        ]
    if (export_format or "csv") not in EXPORT_FORMATS:
        problems["export_format"] = [f"The format must be one of {', '.join(EXPORT_FORMATS)}."]
    return problems


def sms_segments(text: str) -> int:
    """SMS parts a text takes (160 characters each, 153 when concatenated)."""
    if len(text) <= SMS_SEGMENT:
        return 1
    return -(-len(text) // 153)


DELIVERY_CONTENT = ("subject", "html_body", "text_body", "push_title", "push_data", "columns",
                    "export_format")  # fmt: skip


def delivery_problems(delivery: Delivery) -> dict[str, list[str]]:
    """A delivery's problems per field: its content (``content_problems``, with its
    campaign's personalisation fields) and, for an email, its sender. One rule for every
    entry point: the admin's form and any ``full_clean()`` run it (registered as the
    delivery's check in ``CampaignsConfig.ready``), as the workflow's delivery activity runs
    ``activity_problems``."""
    if delivery.campaign_id is None:
        return {}
    problems = content_problems(
        channel=delivery.channel,
        fields={field: getattr(delivery, field) for field in DELIVERY_CONTENT},
        multi_level=delivery.dimension == Dimension.BOOKING,
        perso=perso_of(delivery.campaign),
    )
    if delivery.channel == Channel.EMAIL and (refused := sender_problems(delivery.sender)):
        problems["sender"] = refused
    return problems


ACTIVITY_CONTENT = ("label", "subject", "html_body", "text_body", "push_title", "sender",
                    "reply_to", "category")  # fmt: skip


def activity_problems(settings: Mapping[str, Any], campaign: Campaign | None) -> list[str]:
    """The delivery activity's settings: a channel, valid content, an existing typology."""
    channel = settings.get("channel")
    if channel not in Channel.values:
        return [f"channel must be one of {', '.join(Channel.values)}"]
    problems = []
    typology = settings.get("typology")
    if typology is not None and not Typology.objects.filter(pk=typology).exists():
        problems.append("typology must be the id of a typology")
    found = content_problems(
        channel=channel,
        fields=settings,
        multi_level=settings.get("dimension") == "booking",
        perso=perso_of(campaign),
    )
    problems += [f"{name}: {message}" for name, items in found.items() for message in items]
    problems += [f"{name} must be true or false" for name in ("track_opens", "track_clicks")
                 if name in settings and not isinstance(settings[name], bool)]  # fmt: skip
    if channel == Channel.EMAIL:
        problems += [f"sender: {message}" for message in sender_problems(settings.get("sender"))]
    return problems


def delivery_for_activity(ctx: Any, now: datetime) -> datetime | None:
    """The workflow's delivery activity, in a real run: its delivery (created once per run
    and activity) is prepared from the activity's input by background tasks, then sent
    (after its approval when it needs one); the activity waits until it is sent, cancelled
    or failed."""
    from campaigns.delivery import sending

    delivery = prepare_for_activity(ctx)
    if delivery.state in sending.FINISHED:
        return None
    return now + WAIT_FOR_SENDING


def prepare_for_activity(ctx: Any) -> Delivery:
    """The activity's delivery, created once per run; its preparation starts from the
    activity's input (when the run's transaction commits)."""
    settings = ctx.activity.settings
    run = ctx.execution.run
    delivery = Delivery.objects.filter(run=run, activity=ctx.activity).first()
    if delivery is None:
        try:
            with transaction.atomic():
                delivery = Delivery.objects.create(
                    campaign=ctx.activity.campaign,
                    activity=ctx.activity,
                    run=run,
                    channel=settings["channel"],
                    dimension=settings.get("dimension", "contact"),
                    typology_id=settings.get("typology"),
                    requires_approval=bool(settings.get("requires_approval")),
                    track_opens=settings.get("track_opens", True) is not False,
                    track_clicks=settings.get("track_clicks", True) is not False,
                    columns=settings.get("columns") or [],
                    export_format=settings.get("export_format") or "csv",
                    created_by=run.started_by,
                    **{
                        key: settings.get(key) or (str(ctx.activity) if key == "label" else "")
                        for key in ACTIVITY_CONTENT
                    },
                )
        except IntegrityError:
            delivery = Delivery.objects.get(run=run, activity=ctx.activity)
    if delivery.state != DeliveryState.DRAFT:
        return delivery
    return preparation.prepare(
        delivery=delivery,
        run_key=ctx.run_key,
        table=ctx.input_names[0],
        actor=run.started_by,
        background=True,
    )
