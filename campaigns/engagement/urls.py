from django.urls import path

from campaigns.engagement import views

app_name = "engagement"

urlpatterns = [
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("preferences/<str:token>/", views.preferences, name="preferences"),
    path("view/<str:token>/", views.mirror, name="mirror"),
    path("t/c/<str:token>", views.click, name="click"),
    path("t/o/<str:token>", views.open_pixel, name="open"),
    path("webhooks/sms/inbound/", views.sms_inbound, name="sms_inbound"),
]
