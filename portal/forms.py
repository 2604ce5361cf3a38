from __future__ import annotations

from typing import Any

from django.contrib.auth.forms import PasswordResetForm
from django.template import loader

from portal import bearer, services


class OutboxPasswordResetForm(PasswordResetForm):
    """Password reset emails go through the outbox like every other notification. The reset
    token is not stored with them: the email holds a placeholder and the sending task mints a
    fresh token (``portal.services.password_reset_secret``)."""

    def send_mail(
        self,
        subject_template_name: str,
        email_template_name: str,
        context: dict[str, Any],
        from_email: str | None,
        to_email: str,
        html_email_template_name: str | None = None,
    ) -> None:
        user = context["user"]
        sealed = bearer.Sealed(token=bearer.Secret("password_reset", {"user": user.pk}))
        context = {**context, "token": sealed["token"]}
        services.queue_email(
            to=to_email,
            subject=loader.render_to_string(subject_template_name, context),
            body_text=loader.render_to_string(email_template_name, context),
            body_html=(
                loader.render_to_string(html_email_template_name, context)
                if html_email_template_name
                else ""
            ),
            recipient=user,
            kind="password_reset",
            sealed=sealed,
        )
