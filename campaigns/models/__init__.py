"""Campaign models, one module per sub-domain, re-exported here."""

from campaigns.models.campaign import (
    Campaign,
    CampaignQuerySet,
    PersonalisationField,
    ScheduledRun,
)

__all__ = ["Campaign", "CampaignQuerySet", "PersonalisationField", "ScheduledRun"]
