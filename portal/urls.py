from django.contrib import admin
from django.urls import include, path

from portal import export_views, files, views
from portal.throttling import throttle_password_reset

portal_patterns = (
    [
        path("", views.dashboard_view, name="dashboard"),
        path("entities/", views.entity_list, name="entity_list"),
        path("entities/<str:code>/", views.entity_detail, name="entity_detail"),
        path("exports/", export_views.export_list, name="export_list"),
        path("exports/new/", export_views.export_create, name="export_create"),
        path("exports/<int:pk>/", export_views.export_detail, name="export_detail"),
        path("exports/<int:pk>/status/", export_views.export_status, name="export_status"),
        path("exports/<int:pk>/download/", export_views.export_download, name="export_download"),
    ],
    "portal",
)

urlpatterns = [
    path("", include(portal_patterns)),
    path("", include("packages.urls")),
    path("", include("approvals.urls")),
    path("", include("campaigns.urls")),
    # A message's signed links (no log-in) and the SMS gateway's inbound webhook.
    path("", include("campaigns.engagement.urls")),
    path(
        "accounts/password_reset/",
        throttle_password_reset(views.PasswordResetView.as_view()),
        name="password_reset",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("health/", views.health, name="health"),
    path("favicon.ico", views.favicon, name="favicon"),
    # Every stored file, after a check of the rights on the row that owns it (never /media/).
    path("files/<path:name>", files.download, name="private_file"),
]
