import re

import pytest

from approvals.models import ApprovalRequest
from packages import services
from portal import bearer
from portal.models import Notification


@pytest.fixture
def submitted(make_package, form_campaign, org, valid_values):
    """A by-form order of STORE_A submitted for approval."""
    package = make_package(campaign=form_campaign)
    order = services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=valid_values, submit=True
    ).order
    return order, ApprovalRequest.objects.for_object(order).get()


@pytest.fixture
def by_campaign_order(make_package, org):
    package = make_package("by_campaign")
    order = services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    return order, ApprovalRequest.objects.for_object(order).get()


def emailed_link(recipient) -> str:
    """The approval link path from the latest approval email to ``recipient``, as sent (the
    outbox row itself holds no usable link)."""
    note = (
        Notification.objects.filter(recipient=recipient, kind__startswith="approval_")
        .order_by("-id")
        .first()
    )
    _subject, text, _html = bearer.reveal(note)
    return re.search(r"https?://[^/\s]+(/approvals/link/\S+/)", text).group(1)
