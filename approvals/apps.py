from typing import Any

from django.apps import AppConfig


def _fill_missing_approver_rights(*, apps: Any = None, **kwargs: Any) -> None:
    """After ``migrate``: requests opened before approver rights existed get theirs (unless
    the database was just migrated back to before them)."""
    from approvals.services import fill_missing_approver_rights

    try:
        if apps is not None:
            apps.get_model("approvals", "ApproverRight")
    except LookupError:
        return
    fill_missing_approver_rights()


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from approvals import services
        from portal import bearer

        bearer.register("approval_link", services.approval_link_secret)
        post_migrate.connect(
            _fill_missing_approver_rights,
            sender=self,
            dispatch_uid="approvals.fill_missing_approver_rights",
        )
