"""The audience lists the portal and the admin export (``portal.exports``)."""

from __future__ import annotations

from campaigns.models import Contact
from campaigns.services import contact_search
from portal.exports import Column, ExportKind

# The columns of the admin's contact export (ContactExportResource names them alike), read
# straight from the database: the file can be imported back as it is.
CONTACT_COLUMNS = tuple(
    Column(name, path)
    for name, path in [
        ("external_id", "external_id"),
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("email", "email"),
        ("phone", "phone"),
        ("language", "language"),
        ("birth_date", "birth_date"),
        ("entity", "entity__code"),
        ("email_consent", "email_consent"),
        ("sms_consent", "sms_consent"),
        ("push_consent", "push_consent"),
        ("blocklisted", "blocklisted"),
        ("created_at", "created_at"),
    ]
)

CONTACTS = ExportKind(
    name="contacts",
    label="Contacts",
    model=Contact,
    columns=CONTACT_COLUMNS,
    visible=lambda user: Contact.objects.visible_to(user),
    permission="campaigns.view_contact",
    search=contact_search,
)
