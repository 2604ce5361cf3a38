from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns and audience"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from approvals.services import register_handler
        from campaigns import (
            dashboard,  # noqa: F401  (registers the dashboard section)
            models,
        )
        from campaigns.delivery.providers import check_providers
        from campaigns.delivery.sending import DeliveryApprovalHandler
        from campaigns.delivery.services import delivery_for_activity
        from campaigns.exports import CONTACTS
        from campaigns.models import LocalApproval
        from campaigns.workflow.activities import Delivery
        from campaigns.workflow.local_approval import LocalApprovalHandler
        from portal import exports, files

        register_handler(LocalApproval, LocalApprovalHandler())
        files.register(models.ImportJob, "file", models.ImportJob.objects.visible_to)
        files.register(models.ImportJob, "error_report", models.ImportJob.objects.visible_to)
        files.register(models.Delivery, "export_file", models.Delivery.objects.visible_to)
        exports.register(CONTACTS)
        register_handler(models.Delivery, DeliveryApprovalHandler())
        Delivery.hooks.append(delivery_for_activity)
        checks.register(check_providers)
        self.register_model_checks()

        from django.db.models.signals import pre_delete

        from campaigns.engagement.events import delete_with_delivery

        pre_delete.connect(delete_with_delivery, sender=models.Delivery, dispatch_uid="events")

    @staticmethod
    def register_model_checks() -> None:
        """The rules ``clean()`` runs that live above the models (``campaigns.models.checks``):
        each one stays in the module that owns it."""
        from campaigns import models, personalisation, targeting, triggers
        from campaigns.delivery import services as delivery_services
        from campaigns.delivery import typology
        from campaigns.models import checks

        checks.register(models.Delivery, delivery_services.delivery_problems)
        checks.register(models.Typology, typology.typology_problems)
        checks.register(models.TriggerDefinition, triggers.definition_problems)
        checks.register(models.SavedQuery, targeting.saved_query_problems)
        checks.register(models.PersonalisationField, personalisation.default_problems)

    def seed_demo(self, **kwargs) -> None:
        from campaigns.demo import seed

        seed(**kwargs)
