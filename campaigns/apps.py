from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns and audience"
    default_auto_field = "django.db.models.BigAutoField"

    def seed_demo(self, **kwargs) -> None:
        from campaigns.demo import seed

        seed(**kwargs)
