"""What each operator role may do, as Django model permissions.

A membership puts the user in the role's group ("role:<role>") for these kind-of-thing
permissions, and in the entity's group ("entity:<code>") whose guardian object permissions say
on which entities (and so on which entity-owned objects) the user may act. Permissions of apps
not migrated yet are skipped and picked up at the next migrate.
"""

from portal.choices import Role

ROLE_PERMISSIONS: dict[str, list[str]] = {
    Role.CENTRAL_MARKETER: [
        "portal.view_entity",
        "portal.add_entity",
        "portal.change_entity",
        "portal.view_membership",
        "portal.add_membership",
        "portal.change_membership",
        "portal.delete_membership",
        "auth.view_user",
        "portal.view_auditlog",
        "portal.view_notification",
        "portal.resend_notification",
        "portal.view_exportjob",
        "campaigns.add_campaign",
        "campaigns.change_campaign",
        "campaigns.view_campaign",
        "campaigns.add_personalisationfield",
        "campaigns.change_personalisationfield",
        "campaigns.delete_personalisationfield",
        "campaigns.view_personalisationfield",
        "packages.add_package",
        "packages.change_package",
        "packages.view_package",
        "packages.publish_package",
        "packages.add_packagedocument",
        "packages.change_packagedocument",
        "packages.delete_packagedocument",
        "packages.view_packagedocument",
        "packages.view_order",
        *[
            f"campaigns.{action}_{model}"
            for model in (
                "contact",
                "store",
                "booking",
                "subscription",
                "quarantine",
                "savedquery",
                "typology",
                "triggerdefinition",
            )
            for action in ("view", "add", "change")
        ],
        "campaigns.view_importjob",
        "campaigns.add_importjob",
        "campaigns.view_delivery",
        "campaigns.add_delivery",
        "campaigns.change_delivery",
        "campaigns.view_message",
        "campaigns.view_providerevent",
        "campaigns.view_triggeredmessage",
    ],
    Role.CENTRAL_APPROVER: [
        "portal.view_entity",
        "portal.view_auditlog",
        "portal.view_notification",
        "portal.view_exportjob",
        "packages.view_package",
        "packages.view_order",
        "packages.decide_order",
        "campaigns.view_campaign",
        "approvals.view_approvalrequest",
        "approvals.decide_approvalrequest",
    ],
    Role.LOCAL_OPERATOR: [
        "portal.view_entity",
        "packages.view_package",
        "packages.add_order",
        "packages.change_order",
        "packages.view_order",
        "campaigns.view_campaign",
        "campaigns.change_campaign",
        "campaigns.view_contact",
        "campaigns.view_savedquery",
        "campaigns.view_importjob",
        "campaigns.add_importjob",
    ],
    Role.LOCAL_APPROVER: [
        "portal.view_entity",
        "packages.view_package",
        "packages.view_order",
        "campaigns.view_campaign",
        "approvals.view_approvalrequest",
        "approvals.decide_approvalrequest",
    ],
}

ENTITY_GROUP_PREFIX = "entity:"
ROLE_GROUP_PREFIX = "role:"
ENTITY_ACCESS_PERM = "portal.access_entity"


def role_group_name(role: str) -> str:
    return f"{ROLE_GROUP_PREFIX}{role}"
