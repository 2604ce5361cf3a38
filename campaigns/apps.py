from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns and audience"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from approvals.services import register_handler
        from campaigns import models
        from campaigns.delivery.providers import check_providers
        from campaigns.delivery.sending import DeliveryApprovalHandler
        from campaigns.delivery.services import delivery_for_activity
        from campaigns.models import LocalApproval
        from campaigns.workflow.activities import Delivery
        from campaigns.workflow.local_approval import LocalApprovalHandler

        register_handler(LocalApproval, LocalApprovalHandler())
        register_handler(models.Delivery, DeliveryApprovalHandler())
        Delivery.hooks.append(delivery_for_activity)
        checks.register(check_providers)

    def seed_demo(self, **kwargs) -> None:
        from campaigns.demo import seed

        seed(**kwargs)
