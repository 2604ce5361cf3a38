from django.urls import path

from packages import views

app_name = "packages"

urlpatterns = [
    path("packages/", views.catalogue, name="catalogue"),
    path("packages/<int:pk>/", views.package_detail, name="package_detail"),
    path("packages/<int:pk>/order/", views.order_create, name="order_create"),
    path("packages/<int:pk>/documents/<int:document_pk>/", views.document, name="document"),
    path("orders/", views.order_list, name="order_list"),
    path("orders/<int:pk>/", views.order_detail, name="order_detail"),
    path("orders/<int:pk>/edit/", views.order_edit, name="order_edit"),
    path("orders/<int:pk>/submit/", views.order_submit, name="order_submit"),
    path("orders/<int:pk>/cancel/", views.order_cancel, name="order_cancel"),
    path("orders/<int:pk>/files/<str:name>/", views.order_file, name="order_file"),
]
