from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal: entities, operators, audit, notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from portal import bearer, files, services, signals
        from portal.models import ExportJob

        bearer.register("password_reset", services.password_reset_secret)
        files.register(ExportJob, "file", ExportJob.objects.visible_to)

        post_migrate.connect(signals.sync_role_groups, dispatch_uid="portal.sync_role_groups")
