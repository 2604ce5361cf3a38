from django.urls import path

from approvals import views

app_name = "approvals"

urlpatterns = [
    path("approvals/", views.inbox, name="inbox"),
    path("approvals/<int:pk>/", views.request_detail, name="request_detail"),
    path("approvals/link/<str:token>/", views.link, name="link"),
]
