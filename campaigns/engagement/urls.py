from django.urls import path

from campaigns.engagement import views, webhooks

app_name = "engagement"

urlpatterns = [
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("preferences/<str:token>/", views.preferences, name="preferences"),
    path("view/<str:token>/", views.mirror, name="mirror"),
    path("t/c/<str:token>", views.click, name="click"),
    path("t/o/<str:token>", views.open_pixel, name="open"),
    path("webhooks/sms/inbound/", views.sms_inbound, name="sms_inbound"),
    path("webhooks/bounces/ses/", webhooks.ses, name="bounces_ses"),
    path("webhooks/bounces/sendgrid/", webhooks.sendgrid, name="bounces_sendgrid"),
    path("webhooks/bounces/mailgun/", webhooks.mailgun, name="bounces_mailgun"),
    path("webhooks/bounces/postmark/", webhooks.postmark, name="bounces_postmark"),
    path(
        "webhooks/bounces/postmark/<str:token>/", webhooks.postmark, name="bounces_postmark_token"
    ),
]
