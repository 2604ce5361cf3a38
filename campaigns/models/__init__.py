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
from campaigns.models.delivery import (
    Delivery,
    DeliveryState,
    Message,
    MessageStatus,
    Proof,
    Typology,
)
from campaigns.models.workflow import (
    Activity,
    ActivityExecution,
    ExecutionState,
    LocalApproval,
    LocalApprovalMode,
    TargetRemoval,
    Transition,
    TransitionCount,
    WorkflowRun,
    WorkflowRunState,
)

__all__ = [
    "Activity",
    "ActivityExecution",
    "Booking",
    "Campaign",
    "CampaignQuerySet",
    "Contact",
    "Delivery",
    "DeliveryState",
    "ExecutionState",
    "ImportJob",
    "LocalApproval",
    "LocalApprovalMode",
    "Message",
    "MessageStatus",
    "PersonalisationField",
    "Proof",
    "Quarantine",
    "SavedQuery",
    "ScheduledRun",
    "Store",
    "Subscription",
    "TargetRemoval",
    "Transition",
    "TransitionCount",
    "Typology",
    "WorkTableRow",
    "WorkflowRun",
    "WorkflowRunState",
]
