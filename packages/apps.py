from django.apps import AppConfig


class PackagesConfig(AppConfig):
    name = "packages"
    verbose_name = "Packages and orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from approvals.services import register_handler
        from campaigns.delivery.reports import register_report_subject
        from packages import dashboard  # noqa: F401  (registers the dashboard sections)
        from packages.approval import OrderApprovalHandler
        from packages.exports import ORDERS
        from packages.models import Order, Package, PackageDocument
        from packages.reports import package_report_subject
        from portal import exports, files

        register_handler(Order, OrderApprovalHandler())
        register_report_subject("package", package_report_subject)
        exports.register(ORDERS)
        files.register(
            PackageDocument,
            "file",
            lambda user: PackageDocument.objects.filter(
                package__in=Package.objects.visible_to(user)
            ),
        )

    def seed_demo(self, **kwargs) -> None:
        from packages.demo import seed

        seed(**kwargs)
