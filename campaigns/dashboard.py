"""Dashboard section of the campaigns app: the campaigns running now."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from campaigns.choices import CampaignState
from campaigns.models import Campaign
from portal.dashboard import DashboardItem, DashboardSection, register
from portal.models import is_central_user


@register(35)
def running_campaigns(user: Any) -> DashboardSection | None:
    if not (is_central_user(user) and user.has_perm("packages.add_package")):
        return None
    campaigns = (
        Campaign.objects.visible_to(user)
        .filter(state=CampaignState.RUNNING)
        .select_related("entity")
        .order_by("-id")[:10]
    )
    return DashboardSection(
        key="running-campaigns",
        title="Running campaigns",
        empty_text="No campaign is running.",
        items=[
            DashboardItem(
                title=campaign.name,
                url=reverse("campaigns:detail", args=[campaign.pk]),
                detail=f"{campaign.get_kind_display()} · {campaign.entity.name}",
            )
            for campaign in campaigns
        ],
    )
