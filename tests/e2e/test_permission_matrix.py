"""Every portal URL and admin page, for each of anonymous, central marketer, central approver,
operator of entity A and operator of entity B: the expected answer, and never a 500."""

import pytest
from django.urls import reverse

from approvals.models import ApprovalRequest
from campaigns.models import Campaign
from packages import services

ACTORS = ["anonymous", "marketer", "approver", "operator_a", "operator_b"]
LOGIN = 302  # anonymous visitors are sent to the login page


@pytest.fixture
def world(org, make_package, form_campaign, valid_values):
    from approvals import services as approvals

    package = make_package(campaign=form_campaign, audience=[org.store_a])
    fresh = make_package(campaign=form_campaign, audience=[org.store_a, org.store_b])
    order = services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=valid_values, submit=True
    ).order
    request = ApprovalRequest.objects.for_object(order).get()
    by_campaign = make_package("by_campaign", audience=[org.store_a])
    child_order = services.place_order(
        package=by_campaign, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    approvals.decide(
        request=ApprovalRequest.objects.for_object(child_order).get(),
        actor=org.approver,
        approve=True,
    )
    child = Campaign.objects.get(order=child_order)
    return {
        "package": package.pk,
        "fresh": fresh.pk,
        "order": order.pk,
        "request": request.pk,
        "child": child.pk,
        "reference": form_campaign.pk,
    }


# (url name, args from world, expected codes for ACTORS)
PORTAL = [
    ("portal:dashboard", [], [LOGIN, 200, 200, 200, 200]),
    ("portal:entity_list", [], [LOGIN, 200, 200, 200, 200]),
    ("packages:catalogue", [], [LOGIN, 200, 200, 200, 200]),
    ("packages:package_detail", ["package"], [LOGIN, 200, 200, 200, 404]),
    ("packages:order_create", ["fresh"], [LOGIN, 403, 403, 200, 200]),
    ("packages:order_create", ["package"], [LOGIN, 403, 403, 302, 404]),
    ("packages:order_list", [], [LOGIN, 200, 200, 200, 200]),
    ("packages:order_detail", ["order"], [LOGIN, 200, 200, 200, 404]),
    ("packages:order_edit", ["order"], [LOGIN, 403, 403, 200, 404]),
    ("campaigns:list", [], [LOGIN, 200, 200, 200, 200]),
    ("campaigns:detail", ["child"], [LOGIN, 200, 200, 200, 404]),
    # central marketers hold the campaign right on every entity; approvers do not
    ("campaigns:personalise", ["child"], [LOGIN, 200, 403, 200, 404]),
    ("approvals:inbox", [], [LOGIN, 200, 200, 200, 200]),
    ("campaigns:action", ["child", "stop"], [LOGIN, 200, 403, 200, 404]),
    ("campaigns:audience", [], [LOGIN, 200, 200, 200, 200]),
    ("campaigns:import_create", [], [LOGIN, 200, 403, 200, 200]),
    ("approvals:request_detail", ["request"], [LOGIN, 200, 200, 200, 404]),
]
POSTS = [
    ("packages:order_submit", ["order"], [LOGIN, 403, 403, 302, 404]),
    ("packages:order_cancel", ["order"], [LOGIN, 403, 403, 302, 404]),
    # "Stop" asks first: a POST without a reason shows the confirmation page, stops nothing
    ("campaigns:action", ["child", "stop"], [LOGIN, 200, 403, 200, 404]),
    ("approvals:request_detail", ["request"], [LOGIN, 403, 200, 403, 404]),
]
ADMIN = [
    ("admin:packages_package_changelist", [], [LOGIN, 200, 200, LOGIN, LOGIN]),
    ("admin:packages_package_change", ["package"], [LOGIN, 200, 200, LOGIN, LOGIN]),
    ("admin:packages_package_add", [], [LOGIN, 200, 403, LOGIN, LOGIN]),
    ("admin:packages_order_changelist", [], [LOGIN, 200, 200, LOGIN, LOGIN]),
    ("admin:packages_order_change", ["order"], [LOGIN, 200, 200, LOGIN, LOGIN]),
    ("admin:campaigns_campaign_changelist", [], [LOGIN, 200, 200, LOGIN, LOGIN]),
    ("admin:campaigns_campaign_change", ["reference"], [LOGIN, 200, 200, LOGIN, LOGIN]),
    ("admin:approvals_approvalrequest_changelist", [], [LOGIN, 403, 200, LOGIN, LOGIN]),
    ("admin:approvals_approvalrequest_change", ["request"], [LOGIN, 403, 200, LOGIN, LOGIN]),
    ("admin:portal_entity_changelist", [], [LOGIN, 200, 200, LOGIN, LOGIN]),
    ("admin:campaigns_contact_changelist", [], [LOGIN, 200, 403, LOGIN, LOGIN]),
    ("admin:campaigns_importjob_add", [], [LOGIN, 200, 403, LOGIN, LOGIN]),
    ("admin:campaigns_savedquery_changelist", [], [LOGIN, 200, 403, LOGIN, LOGIN]),
    ("admin:portal_auditlog_changelist", [], [LOGIN, 200, 200, LOGIN, LOGIN]),
    ("admin:portal_notification_changelist", [], [LOGIN, 200, 200, LOGIN, LOGIN]),
]


def _cases(table, method):
    for name, args, codes in table:
        for actor, code in zip(ACTORS, codes, strict=True):
            yield pytest.param(method, name, args, actor, code, id=f"{method}-{name}-{actor}")


@pytest.mark.parametrize(
    ("method", "name", "args", "actor", "expected"),
    [*_cases(PORTAL, "get"), *_cases(ADMIN, "get"), *_cases(POSTS, "post")],
)
def test_permission_matrix(client, org, world, method, name, args, actor, expected):
    if actor != "anonymous":
        client.force_login(getattr(org, actor))
    url = reverse(name, args=[world.get(arg, arg) for arg in args])
    response = getattr(client, method)(url)
    assert response.status_code == expected, f"{method.upper()} {url} as {actor}"
    if expected == LOGIN and actor == "anonymous":
        assert "login" in response["Location"]
