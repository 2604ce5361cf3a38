"""Campaign models, one module per sub-domain, re-exported here."""

from campaigns.models.audience import (
    Booking,
    Contact,
    ImportJob,
    Quarantine,
    SavedQuery,
    Store,
    Subscription,
    WorkTableRow,
)
from campaigns.models.campaign import (
    Campaign,
    CampaignQuerySet,
    PersonalisationField,
    ScheduledRun,
)

__all__ = [
    "Booking",
    "Campaign",
    "CampaignQuerySet",
    "Contact",
    "ImportJob",
    "PersonalisationField",
    "Quarantine",
    "SavedQuery",
    "ScheduledRun",
    "Store",
    "Subscription",
    "WorkTableRow",
]
