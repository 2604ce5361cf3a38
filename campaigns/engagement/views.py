"""The contact's own pages, reached from a message's signed links (no log-in), and the SMS
gateway's inbound webhook.

- ``/unsubscribe/<token>/``: GET shows a confirmation (mail scanners open links: nothing
  changes); POST unsubscribes. Mailbox providers' one-click POST (RFC 8058, body
  ``List-Unsubscribe=One-Click``) carries no cookie and no CSRF token: this view is exempt
  from CSRF because the signed token is what authorises it, and it changes nothing else.
- ``/preferences/<token>/``: consent per channel and categories (a CSRF-protected form).
- ``/view/<token>/``: the mirror page, the email as it was sent.
- ``/webhooks/sms/inbound/``: STOP replies, with the gateway's bearer token.

A token that is not one we signed, or names no message, answers the portal's plain 404.
"""

from __future__ import annotations

import hmac
import json
import logging

from csp.decorators import csp_replace
from django import forms
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import escape
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from campaigns.choices import Channel
from campaigns.engagement import services, tokens
from campaigns.models import Message, MessageStatus

logger = logging.getLogger(__name__)
MIRRORED = (MessageStatus.SENT, MessageStatus.IN_FLIGHT, MessageStatus.IN_DOUBT)


def _message(token: str) -> Message:
    message_id = tokens.read(token)
    message = (
        Message.objects.select_related("contact__entity", "delivery__campaign")
        .filter(pk=message_id)
        .first()
        if message_id
        else None
    )
    if message is None:
        raise Http404
    return message


def _masked(address: str) -> str:
    """j•••@example.com: enough to recognise one's address, not to read it off a screen."""
    name, at, domain = address.partition("@")
    return f"{name[:1]}•••{at}{domain}" if at else "•••"


def _sample(request: HttpRequest) -> HttpResponse:
    return render(request, "campaigns/engagement/sample.html")


@never_cache
@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    if token == tokens.SAMPLE:
        return _sample(request)
    message = _message(token)
    channel = message.channel if message.channel in services.CONSENT_CHANNELS else Channel.EMAIL
    context = {
        "token": token,
        "channel": Channel(channel).label.lower(),
        "address": _masked(message.address),
        "entity": message.contact.entity.name,
    }
    if request.method == "POST":
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        services.unsubscribe(
            message=message, source="one-click unsubscribe" if one_click else "unsubscribe link"
        )
        return render(request, "campaigns/engagement/unsubscribed.html", context)
    return render(request, "campaigns/engagement/unsubscribe.html", context)


class PreferencesForm(forms.Form):
    """Consent per channel, and the categories the contact still receives."""

    email = forms.BooleanField(required=False, label="Emails")
    sms = forms.BooleanField(required=False, label="Text messages (SMS)")
    push = forms.BooleanField(required=False, label="App notifications")
    categories = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Topics I want to hear about"
    )

    def __init__(self, *args, available: list[str], **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.fields["categories"].choices = [(name, name) for name in available]
        if not available:
            del self.fields["categories"]


@never_cache
@csrf_protect
@require_http_methods(["GET", "HEAD", "POST"])
def preferences(request: HttpRequest, token: str) -> HttpResponse:
    if token == tokens.SAMPLE:
        return _sample(request)
    message = _message(token)
    contact = message.contact
    available = services.categories()
    opted_out = set(contact.opt_outs.values_list("category", flat=True))
    initial = {
        "email": contact.email_consent, "sms": contact.sms_consent, "push": contact.push_consent,
        "categories": [name for name in available if name not in opted_out],
    }  # fmt: skip
    form = PreferencesForm(request.POST or None, initial=initial, available=available)
    saved = None
    if request.method == "POST" and form.is_valid():
        chosen = form.cleaned_data
        saved = services.set_preferences(
            contact=contact,
            channels={channel: bool(chosen[channel]) for channel in services.CONSENT_CHANNELS},
            opted_out=set(available) - set(chosen.get("categories") or []),
            message=message,
        )
        contact.refresh_from_db()
    return render(
        request,
        "campaigns/engagement/preferences.html",
        {"form": form, "saved": saved, "entity": contact.entity.name},
    )


@never_cache
@csp_replace({"default-src": ["'none'"], "script-src": None, "style-src": ["'unsafe-inline'"],
              "img-src": ["https:", "data:"], "form-action": ["'none'"],
              "sandbox": ["allow-popups", "allow-popups-to-escape-sandbox"]})  # fmt: skip
@require_http_methods(["GET", "HEAD"])
def mirror(request: HttpRequest, token: str) -> HttpResponse:
    """The email as it was sent: rendered again by the sending code from the same inputs
    (the delivery's content, frozen once it left draft; the message's row, its enrichment
    data and record; the contact's fields)."""
    from campaigns.delivery import sending

    if token == tokens.SAMPLE:
        return _sample(request)
    message = _message(token)
    if message.status not in MIRRORED or message.channel != Channel.EMAIL:
        raise Http404
    renderer = sending.Renderer(message.delivery)
    try:
        rendered = renderer.render(renderer.recipient_of(message))
    except sending.RENDER_ERRORS:
        raise Http404 from None
    body = rendered.html or f'<pre style="white-space:pre-wrap">{escape(rendered.text)}</pre>'
    return HttpResponse(body, content_type="text/html; charset=utf-8")


@csrf_exempt
@require_POST
def sms_inbound(request: HttpRequest) -> HttpResponse:
    """The SMS gateway posts each reply: JSON ``{"from": "+33…", "text": "STOP", "id": …}``
    (or a form with ``From`` and ``Body``), with ``Authorization: Bearer
    <DELIVERY_SMS_INBOUND_TOKEN>``. A STOP reply (and its usual variants) removes the
    sender's SMS consent; other replies are acknowledged and ignored."""
    expected = settings.DELIVERY_SMS_INBOUND_TOKEN
    if not expected:
        raise Http404
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        logger.warning("SMS inbound webhook: refused a request with a bad token from %s",
                       request.META.get("REMOTE_ADDR", "?"))  # fmt: skip
        return JsonResponse({"error": "forbidden"}, status=403)
    if request.content_type == "application/json":
        try:
            payload = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            return JsonResponse({"error": "the body is not JSON"}, status=400)
        if not isinstance(payload, dict):
            return JsonResponse({"error": "the body must be a JSON object"}, status=400)
    else:
        payload = {"from": request.POST.get("From"), "text": request.POST.get("Body"),
                   "id": request.POST.get("MessageSid")}  # fmt: skip
    phone, text, gateway_id = payload.get("from"), payload.get("text"), payload.get("id") or ""
    if not isinstance(phone, str) or not phone.strip() or not isinstance(text, str):
        return JsonResponse({"error": "give the sender (from) and the text"}, status=400)
    if not services.is_stop(text):
        return JsonResponse({"stop": False, "stopped": 0})
    stopped = services.sms_stop(phone=phone, text=text, gateway_id=str(gateway_id))
    return JsonResponse({"stop": True, "stopped": stopped})


def _tracking(request: HttpRequest, kind: str, token: str) -> HttpResponse:
    """The tracking endpoints through Django (the test client, ``runserver``); under gunicorn
    ``tracking.TrackingMiddleware`` answers them before Django, with the same ``hit``."""
    from campaigns.engagement import tracking

    target = tracking.hit(kind, token, method=request.method or "GET",
                          user_agent=request.headers.get("User-Agent", ""),
                          ip=tracking.client_ip(request.META))  # fmt: skip
    if target is None:
        return HttpResponse(tracking.NOT_FOUND, status=404, content_type="text/plain")
    if kind == "c":
        response = HttpResponse(status=302)
        response["Location"] = target
        response["Referrer-Policy"] = "no-referrer"
    else:
        response = HttpResponse(tracking.GIF, content_type="image/gif")
    response["Cache-Control"] = tracking.NO_STORE[1]
    return response


@require_http_methods(["GET", "HEAD"])
def click(request: HttpRequest, token: str) -> HttpResponse:
    return _tracking(request, "c", token)


@require_http_methods(["GET", "HEAD"])
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    return _tracking(request, "o", token)
