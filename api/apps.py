from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from api.models import ApiToken
        from api.services import forget_tokens

        def token_changed(sender: object, instance: ApiToken, **kwargs: object) -> None:
            # (a request reading the old row before this commits keeps it at most
            # API_TOKEN_CACHE_SECONDS)
            forget_tokens(token_id=instance.pk)

        def user_changed(sender: object, instance: object, **kwargs: object) -> None:
            user_id = instance.pk  # type: ignore[attr-defined]
            forget_tokens(user_id=user_id)

        for signal in (post_save, post_delete):
            signal.connect(
                token_changed, sender=ApiToken, weak=False, dispatch_uid="api-token-cache"
            )
            signal.connect(
                user_changed, sender=get_user_model(), weak=False, dispatch_uid="api-user-cache"
            )
